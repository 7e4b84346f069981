"""Status changes: the one place that moves a batch or an item from one status to another.

Each move is a compare-and-set on the row's current status, checked against the tables of
`tracker.states` first (and by the database's guard triggers, which also write the history row
in `transitions` in the same transaction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, text

from tracker.errors import StaleTransition
from tracker.states import TABLES, BatchStatus, ItemStatus, check_allowed
from tracker.storable import storable_text


def move_batch(conn: Connection, batch_id: str, frm: BatchStatus | str, to: BatchStatus,
               reason: str, at: float, **fields: Any) -> None:
    """Move one batch; `StaleTransition` if it is no longer in `frm`."""
    transition_many(conn, "batch", [batch_id], BatchStatus(frm), to, reason, at, **fields)


def move_item(conn: Connection, item_id: str, frm: ItemStatus, to: ItemStatus, reason: str,
              at: float, exprs: Mapping[str, str] | None = None, **fields: Any) -> None:
    transition_many(conn, "item", [item_id], frm, to, reason, at, exprs, **fields)


def move_items(conn: Connection, item_ids: Sequence[str], frm: ItemStatus, to: ItemStatus,
               reason: str, at: float, exprs: Mapping[str, str] | None = None,
               **fields: Any) -> None:
    """Move every item of `item_ids`, all or none."""
    transition_many(conn, "item", item_ids, frm, to, reason, at, exprs, **fields)


def transition_many(
    conn: Connection,
    entity: str,
    entity_ids: Sequence[str],
    frm: str,
    to: str,
    reason: str,
    at: float,
    exprs: Mapping[str, str] | None = None,
    **fields: Any,
) -> None:
    """Move every row of `entity_ids` from `frm` to `to` (compare-and-set), all or none,
    setting `fields` too, and `exprs` (column -> SQL expression, e.g.
    `{"attempts": "attempts + 1"}`). Each row gets its own history row by trigger.

    Raises `IllegalTransition` before any SQL, `StaleTransition` (the caller's transaction is
    left to roll back) if a row is not in `frm`."""
    if not entity_ids:
        return
    frm, to = str(frm), str(to)  # the values, never an enum's name, reach the driver
    check_allowed(entity, entity_ids[0], frm, to)
    table = TABLES[entity][0]
    assignments = {
        col: storable_text(value) if isinstance(value, str) else value
        for col, value in {"status": to, "status_reason": reason, "updated_at": at,
                           **fields}.items()
    }
    sets = ", ".join(
        [f"{col} = :set_{col}" for col in assignments]
        + [f"{col} = {expr}" for col, expr in (exprs or {}).items()]
    )
    statement = text(
        f"UPDATE {table} SET {sets} WHERE id IN :ids AND status = :frm"
    ).bindparams(bindparam("ids", expanding=True))
    params = {f"set_{col}": value for col, value in assignments.items()}
    moved = 0
    for start in range(0, len(entity_ids), 500):
        chunk = list(entity_ids[start : start + 500])
        moved += conn.execute(statement, {**params, "ids": chunk, "frm": frm}).rowcount
    if moved != len(entity_ids):
        raise StaleTransition(
            entity,
            entity_ids[0] if len(entity_ids) == 1 else f"({len(entity_ids) - moved} of "
            f"{len(entity_ids)} rows)",
            frm,
            to,
        )
