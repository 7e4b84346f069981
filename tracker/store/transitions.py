"""Status changes: the one place that moves a batch or an item from one status to another.

Each move is a compare-and-set on the row's current status, checked against the tables of
`tracker.states` first (and by the database's guard triggers, which also write the history row
in `transitions` in the same transaction).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, text

from tracker.errors import StaleTransition
from tracker.states import TABLES, BatchStatus, ItemStatus, check_allowed
from tracker.storable import storable_text
from tracker.store.dialect import enqueue_order
from tracker.store.engine import is_postgresql
from tracker.store.items import PackablePrefix, PackQuery


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
    if is_postgresql(conn):  # one array parameter: the plan does not change with the count
        statement = text(f"UPDATE {table} SET {sets} WHERE id = ANY(:ids) AND status = :frm")
        chunk_size = 5000
    else:
        statement = text(
            f"UPDATE {table} SET {sets} WHERE id IN :ids AND status = :frm"
        ).bindparams(bindparam("ids", expanding=True))
        chunk_size = 500
    params = {f"set_{col}": value for col, value in assignments.items()}
    moved = 0
    for start in range(0, len(entity_ids), chunk_size):
        chunk = list(entity_ids[start : start + chunk_size])
        moved += conn.execute(statement, {**params, "ids": chunk, "frm": frm}).rowcount
    if moved != len(entity_ids):
        raise StaleTransition(
            entity,
            entity_ids[0] if len(entity_ids) == 1 else f"({len(entity_ids) - moved} of "
            f"{len(entity_ids)} rows)",
            frm,
            to,
        )


def move_queued_prefix(conn: Connection, query: PackQuery, prefix: PackablePrefix,
                       reason: str, *, batch_id: str, at: float) -> None:
    """Move into `batch_id` the items `query` finds (`items.pack_query`), which
    `items.packable_prefix` counted as `prefix` earlier in this transaction: one statement,
    each item counting one more attempt, the scan kept to the prefix's key range.
    `StaleTransition` unless the same number of items with the same tokens moved (on
    PostgreSQL another writer may have queued or cancelled one since the count)."""
    frm, to = str(ItemStatus.QUEUED), str(ItemStatus.IN_BATCH)
    check_allowed("item", f"(the queued items of batch {batch_id})", frm, to)
    order = enqueue_order(conn)
    tokens = conn.execute(
        text("UPDATE items SET status = :to, status_reason = :reason, updated_at = :at, "
             "batch_id = :batch, attempts = attempts + 1 "
             f"WHERE {order} BETWEEN :first AND :last AND {order} IN (SELECT k FROM "
             f"({query.sql}) AS fits) RETURNING est_tokens"),
        {**query.params, "to": to, "reason": storable_text(reason), "at": at,
         "batch": batch_id, "first": prefix.first_key, "last": prefix.last_key},
    ).scalars().all()
    if (len(tokens), sum(tokens)) != (prefix.count, prefix.est_tokens):
        raise StaleTransition("item", f"({len(tokens)} rows moved, {prefix.count} counted) of "
                              f"the queued items for batch {batch_id}", frm, to)


class ItemOutcome(NamedTuple):
    """Where one item of an ingested batch goes, with what its result says (a tuple: ingest
    spools 50,000 of them to disk and back, and a tuple pickles at a fraction of the cost)."""

    item_id: str
    status: ItemStatus
    reason: str
    error_message: str | None = None
    error_code: str | None = None
    error_status: int | None = None
    output_text: str | None = None
    output_data: str | None = None  #: JSON
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    finished_at: float | None = None
    not_before: float | None = None  #: None keeps the item's own
    refund: bool = False  #: the send does not count against its attempts


#: Positional (one tuple per item, sent to the driver as they are: SQLAlchemy's per-row
#: parameter processing cost more than the statement itself).
_RECORD_OUTCOME = (
    "UPDATE items SET status = ?, status_reason = ?, updated_at = ?, error_message = ?, "
    "error_code = ?, error_status = ?, output_text = ?, output_data = ?, prompt_tokens = ?, "
    "completion_tokens = ?, total_tokens = ?, cached_tokens = ?, reasoning_tokens = ?, "
    "finished_at = ?, "
    "not_before = COALESCE(?, not_before), free_attempts = free_attempts + ? "
    "WHERE status = ? AND id = ?")


#: PostgreSQL: up to 1,000 rows as one JSON document (the driver adapts it at C speed; a
#: dozen arrays cost more to send than the UPDATE takes), one UPDATE for all of them.
_OUTCOME_COLUMNS = ("status", "reason", "error_message", "error_code", "error_status",
                    "output_text", "output_data", "prompt_tokens", "completion_tokens",
                    "total_tokens", "cached_tokens", "reasoning_tokens", "finished_at",
                    "not_before", "refund", "id")
_RECORD_OUTCOMES_PG = (
    "UPDATE items SET status = v.status, status_reason = v.reason, updated_at = %s, "
    "error_message = v.error_message, error_code = v.error_code, "
    "error_status = v.error_status, output_text = v.output_text, "
    "output_data = v.output_data, prompt_tokens = v.prompt_tokens, "
    "completion_tokens = v.completion_tokens, total_tokens = v.total_tokens, "
    "cached_tokens = v.cached_tokens, reasoning_tokens = v.reasoning_tokens, "
    "finished_at = v.finished_at, not_before = COALESCE(v.not_before, items.not_before), "
    "free_attempts = items.free_attempts + v.refund "
    "FROM json_to_recordset(%s::json) AS v(status text, reason text, error_message text, "
    "error_code text, error_status int, output_text text, output_data text, "
    "prompt_tokens int, completion_tokens int, total_tokens int, cached_tokens int, "
    "reasoning_tokens int, finished_at float8, "
    "not_before float8, refund int, id text) "
    "WHERE items.id = v.id AND items.id = ANY(%s) AND items.status = %s")


#: PostgreSQL: the rows of one UPDATE (its JSON document stays a few hundred kB).
_PG_ROWS_PER_STATEMENT = 1000


def record_item_outcomes(conn: Connection, outcomes: Sequence[ItemOutcome], at: float) -> None:
    """Move every item of `outcomes` out of `in_batch`, all or none: on SQLite one statement
    prepared once and run for every row, on PostgreSQL one UPDATE per 1,000 rows (each item
    still gets its history row by trigger).

    Raises `StaleTransition` if an item was no longer in its batch."""
    if not outcomes:
        return
    for status in {outcome.status for outcome in outcomes}:
        check_allowed("item", outcomes[0].item_id, ItemStatus.IN_BATCH, status)
    in_batch = str(ItemStatus.IN_BATCH)
    rows = [(str(o.status), storable_text(o.reason), at, _storable(o.error_message),
             _storable(o.error_code), o.error_status, _storable(o.output_text), o.output_data,
             o.prompt_tokens, o.completion_tokens, o.total_tokens, o.cached_tokens,
             o.reasoning_tokens, o.finished_at, o.not_before,
             int(o.refund), in_batch, o.item_id) for o in outcomes]
    if is_postgresql(conn):
        # One statement per 1,000 rows: the item trigger runs once per statement. The plan is
        # pinned to hash joins on rows found by primary key: right after a pack the statistics
        # still count these items as queued, and a nested loop over the chunk's arrays would
        # compare every pair.
        conn.exec_driver_sql("SET LOCAL enable_nestloop = off")
        moved = 0
        for start in range(0, len(rows), _PG_ROWS_PER_STATEMENT):
            part = rows[start:start + _PG_ROWS_PER_STATEMENT]
            document = json.dumps([dict(zip(_OUTCOME_COLUMNS, row[:2] + row[3:16] + row[17:],
                                            strict=True)) for row in part])
            moved += conn.exec_driver_sql(_RECORD_OUTCOMES_PG, (
                at, document, [row[17] for row in part], in_batch)).rowcount
        conn.exec_driver_sql("SET LOCAL enable_nestloop = on")
    else:
        moved = conn.exec_driver_sql(_RECORD_OUTCOME, rows).rowcount
    if moved != len(outcomes):
        raise StaleTransition("item", f"({len(outcomes) - moved} of {len(outcomes)} rows)",
                              in_batch, "an outcome")


def _storable(value: str | None) -> str | None:
    return None if value is None else storable_text(value)
