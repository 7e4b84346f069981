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
class PackQuery:
    """The queued items a new batch may take, as SQL: the longest run of queued items of one
    provider and model (back-off passed, enqueue order, at most `limit`) whose request lines
    fit in `max_bytes` (each line: the payload and id in UTF-8 bytes plus `line_bytes`) and
    whose tokens fit in `token_room` (None: no cap). The first item always fits the bytes (or
    it could never be sent), and the tokens only when `alone` (nothing else in flight).
    `sql` selects each one's enqueue-order key `k` and `est_tokens`; no row reaches Python."""

    sql: str
    params: dict[str, Any]


def pack_query(conn: Connection, provider: str, model: str, job: str, now: float, *,
               limit: int, max_bytes: int, line_bytes: int, token_room: int | None,
               alone: bool) -> PackQuery:
    order = enqueue_order(conn)
    size = f"{byte_length(conn, 'payload')} + {byte_length(conn, 'id')} + :line_bytes"
    return PackQuery(
        "SELECT k, est_tokens FROM ("
        "SELECT k, est_tokens, row_number() OVER w AS rn, sum(size) OVER w AS bytes, "
        "sum(est_tokens) OVER w AS tokens FROM ("
        f"SELECT {order} AS k, {size} AS size, est_tokens FROM items "
        "WHERE status = :queued AND provider = :p AND model = :m AND not_before <= :now "
        f"AND job = :job ORDER BY {order} LIMIT :n) AS candidates "
        "WINDOW w AS (ORDER BY k ROWS UNBOUNDED PRECEDING)) AS running "
        "WHERE (rn = 1 OR bytes <= :max_bytes) "
        "AND (:no_cap OR tokens <= :room OR (rn = 1 AND :alone))",
        {"queued": str(ItemStatus.QUEUED), "p": provider, "m": model, "job": job, "now": now,
         "n": limit, "line_bytes": line_bytes, "max_bytes": max_bytes, "no_cap": token_room is None,
         "room": token_room or 0, "alone": alone})


@dataclass(frozen=True)
class PackablePrefix:
    """What `PackQuery` finds: `count` items carrying `est_tokens` tokens, whose enqueue-order
    keys run from `first_key` to `last_key`."""

    count: int
    est_tokens: int
    first_key: int
    last_key: int


def packable_prefix(conn: Connection, query: PackQuery) -> PackablePrefix:
    row = conn.execute(
        text("SELECT count(*) AS n, COALESCE(sum(est_tokens), 0) AS tokens, "
             "COALESCE(min(k), 0) AS first_key, COALESCE(max(k), 0) AS last_key "
             f"FROM ({query.sql}) AS fits"), query.params).one()
    return PackablePrefix(int(row.n), int(row.tokens), int(row.first_key), int(row.last_key))


def queued_job(engine: Engine, provider: str, model: str, now: float) -> str | None:
    """The job of an item of `provider`/`model` that waits to be packed, the first the index
    gives (the earliest due, then the oldest); None if none waits. A read: an idle pack step
    takes no write lock."""
    with read(engine) as conn:
        found = conn.execute(
            text("SELECT job FROM items WHERE status = :queued AND provider = :p AND model = :m "
                 "AND not_before <= :now LIMIT 1"),
            {"queued": str(ItemStatus.QUEUED), "p": provider, "m": model, "now": now},
        ).first()
    return None if found is None else str(found[0])


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


def record_custom_ids(conn: Connection, batch_id: str, sent_as: dict[str, str]) -> None:
    """Keep the custom id each item is sent under, where it is not the item's own id."""
    if sent_as:
        conn.execute(text("UPDATE items SET custom_id = :c WHERE id = :id AND batch_id = :b"),
                     [{"c": custom_id, "id": item_id, "b": batch_id}
                      for item_id, custom_id in sent_as.items()])


def sent_as(conn: Connection, batch_id: str) -> dict[str, str]:
    """custom id -> item id, for the batch's items sent under another id than their own."""
    return {row.custom_id: row.id for row in conn.execute(
        text("SELECT id, custom_id FROM items WHERE batch_id = :b AND custom_id IS NOT NULL"),
        {"b": batch_id})}


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


def ids_with_status(conn: Connection, status: ItemStatus, job: str | None = None) -> list[str]:
    """The ids of the items in `status` (of `job`, if given)."""
    of_job = " AND job = :job" if job is not None else ""
    return list(conn.execute(text(f"SELECT id FROM items WHERE status = :s{of_job}"),
                             {"s": str(status), "job": job}).scalars())
