"""Statements on items (creating them is `tracker.store.item_inserter`'s job)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text

from tracker.providers.base import StoredPayload
from tracker.states import ItemStatus
from tracker.store.dialect import byte_length, enqueue_order
from tracker.store.engine import read

_IN_BATCH = str(ItemStatus.IN_BATCH)


@dataclass(frozen=True)
class PackCandidate:
    """A queued item as packing sees it: its payload's size in UTF-8 bytes, its tokens."""

    id: str
    payload_bytes: int
    est_tokens: int


def queued_for_packing(conn: Connection, provider: str, model: str, now: float,
                       limit: int) -> list[PackCandidate]:
    """Queued items of `provider`/`model` whose back-off has passed, in enqueue order."""
    rows = conn.execute(
        text(f"SELECT id, {byte_length(conn, 'payload')} AS size, est_tokens FROM items "
             "WHERE status = :queued AND provider = :p AND model = :m AND not_before <= :now "
             f"ORDER BY {enqueue_order(conn)} LIMIT :n"),
        {"queued": str(ItemStatus.QUEUED), "p": provider, "m": model, "now": now, "n": limit},
    ).all()
    return [PackCandidate(row.id, int(row.size), int(row.est_tokens)) for row in rows]


def any_queued(engine: Engine, provider: str, model: str, now: float) -> bool:
    """Whether an item of `provider`/`model` waits to be packed (a read: an idle pack step
    takes no write lock)."""
    with read(engine) as conn:
        return conn.execute(
            text("SELECT 1 FROM items WHERE status = :queued AND provider = :p AND model = :m "
                 "AND not_before <= :now LIMIT 1"),
            {"queued": str(ItemStatus.QUEUED), "p": provider, "m": model, "now": now},
        ).first() is not None


def ids_in_batch(engine: Engine, batch_id: str) -> list[str]:
    """The ids of the items still in the batch, in input-file (id) order."""
    with read(engine) as conn:
        return list(conn.execute(
            text("SELECT id FROM items WHERE batch_id = :b AND status = :in_batch ORDER BY id"),
            {"b": batch_id, "in_batch": _IN_BATCH}).scalars())


def count_in_batch(conn: Connection, batch_id: str) -> int:
    return int(conn.execute(text("SELECT count(*) FROM items WHERE batch_id = :b "
                                 "AND status = :in_batch"),
                            {"b": batch_id, "in_batch": _IN_BATCH}).scalar_one())


def stream_in_batch(conn: Connection, batch_id: str, *,
                    stored: bool = False) -> Iterator[dict[str, Any]]:
    """The batch's items as `{"id", "input_payload"}`, in id order (the input file's order,
    which maps 1-based validation-error lines back to items). The payload is a dict, or with
    `stored` a `StoredPayload` (its JSON text, parsed only if read)."""
    result = conn.execution_options(stream_results=True).execute(
        text("SELECT id, payload FROM items WHERE batch_id = :b AND status = :in_batch "
             "ORDER BY id"),
        {"b": batch_id, "in_batch": _IN_BATCH},
    )
    for row in result:
        payload = StoredPayload(row.payload) if stored else json.loads(row.payload)
        yield {"id": row.id, "input_payload": payload}


def attempts_used(conn: Connection, batch_id: str) -> dict[str, int]:
    """Each item still in the batch -> the sends counted against its attempts, in id order."""
    return {row.id: int(row.used) for row in conn.execute(
        text("SELECT id, attempts - free_attempts AS used FROM items WHERE batch_id = :b "
             "AND status = :in_batch ORDER BY id"), {"b": batch_id, "in_batch": _IN_BATCH})}


def most_attempts_used(engine: Engine, batch_id: str) -> int:
    """The most sends any item still in the batch has used (at least 1)."""
    with read(engine) as conn:
        return int(conn.execute(
            text("SELECT COALESCE(max(attempts - free_attempts), 1) FROM items "
                 "WHERE batch_id = :b AND status = :in_batch"),
            {"b": batch_id, "in_batch": _IN_BATCH}).scalar_one())


def ids_with_status(conn: Connection, status: ItemStatus) -> list[str]:
    return list(conn.execute(text("SELECT id FROM items WHERE status = :s"),
                             {"s": str(status)}).scalars())
