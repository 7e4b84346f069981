"""Reads and guarded writes that several steps share."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Connection, text

from tracker.context import Context
from tracker.errors import StaleBatch
from tracker.store.engine import read


def update_one(conn: Connection, sql: str, params: Mapping[str, Any]) -> None:
    """Run a guarded UPDATE that must match exactly one row; `StaleBatch` if it did not (the
    row moved under us), so the caller sends nothing on the strength of a stale read."""
    matched = conn.execute(text(sql), dict(params)).rowcount
    if matched != 1:
        raise StaleBatch(f"expected to update one row, updated {matched}: {sql.split()[1]} "
                         f"{params.get('id')}")


def batch_item_ids(ctx: Context, batch_id: str) -> list[str]:
    """The ids of the items still in the batch, in input-file (id) order."""
    with read(ctx.engine) as conn:
        return list(conn.execute(
            text("SELECT id FROM items WHERE batch_id = :b AND status = 'in_batch' ORDER BY id"),
            {"b": batch_id},
        ).scalars())


def stream_items(conn: Connection, batch_id: str) -> Iterator[dict[str, Any]]:
    """The batch's items as `{"id", "input_payload"}`, in id order (the input file's order,
    which maps 1-based validation-error lines back to items)."""
    result = conn.execution_options(stream_results=True).execute(
        text("SELECT id, payload FROM items WHERE batch_id = :b AND status = 'in_batch' "
             "ORDER BY id"),
        {"b": batch_id},
    )
    for row in result:
        yield {"id": row.id, "input_payload": json.loads(row.payload)}
