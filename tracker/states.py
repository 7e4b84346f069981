"""The state machine: statuses, the tables of allowed moves, and `transition()`.

The move tables here are the only source of truth. `schema/` holds the same edges as rows of
`allowed_transitions`, guarded by triggers, and a test checks the two agree pair by pair.
History rows in `transitions` are written by database triggers on INSERT and on every status
UPDATE, in the same transaction, so no status changes without a row, even from raw SQL; the
`reason` comes from the `status_reason` column that `transition()` sets with the status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, bindparam, text

from tracker.errors import IllegalTransition, StaleTransition
from tracker.storable import storable_text


class ItemStatus(StrEnum):
    QUEUED = "queued"  #: waiting to be packed into a batch
    IN_BATCH = "in_batch"  #: packed into a batch that is being submitted or run
    SUCCEEDED = "succeeded"  #: a result is stored (terminal)
    FAILED = "failed"  #: permanent error, or out of attempts (terminal; `tracker retry`)
    CANCELLED = "cancelled"  #: its batch was cancelled (terminal; `tracker retry --cancelled`)


class BatchStatus(StrEnum):
    PENDING = "pending"  #: built locally, not yet accepted by the provider
    SUBMITTED = "submitted"  #: accepted; the provider is validating it
    IN_PROGRESS = "in_progress"  #: running (or finalizing, or cancelling)
    COMPLETED = "completed"  #: finished at the provider; results not yet stored
    FAILED = "failed"  #: refused, failed validation, or expired; results not yet stored
    CANCELLED = "cancelled"  #: cancelled at the provider; results not yet stored
    INGESTED = "ingested"  #: every item's outcome stored: the batch is closed


I = ItemStatus  # noqa: E741
B = BatchStatus

ITEM_MOVES: dict[ItemStatus, frozenset[ItemStatus]] = {
    I.QUEUED: frozenset({I.IN_BATCH, I.CANCELLED}),
    I.IN_BATCH: frozenset({I.SUCCEEDED, I.FAILED, I.QUEUED, I.CANCELLED}),
    I.SUCCEEDED: frozenset(),
    I.FAILED: frozenset({I.QUEUED}),  # only by an explicit `tracker retry`
    I.CANCELLED: frozenset({I.QUEUED}),  # only by an explicit `tracker retry --cancelled`
}

BATCH_MOVES: dict[BatchStatus, frozenset[BatchStatus]] = {
    B.PENDING: frozenset({B.SUBMITTED, B.IN_PROGRESS, B.COMPLETED, B.FAILED, B.CANCELLED}),
    B.SUBMITTED: frozenset({B.IN_PROGRESS, B.COMPLETED, B.FAILED, B.CANCELLED}),
    B.IN_PROGRESS: frozenset({B.COMPLETED, B.FAILED, B.CANCELLED}),
    B.COMPLETED: frozenset({B.INGESTED}),
    B.FAILED: frozenset({B.INGESTED}),
    B.CANCELLED: frozenset({B.INGESTED}),
    B.INGESTED: frozenset(),
}

TERMINAL_ITEM = frozenset({I.SUCCEEDED, I.FAILED, I.CANCELLED})
OPEN_BATCH = frozenset({B.PENDING, B.SUBMITTED, B.IN_PROGRESS, B.COMPLETED, B.FAILED,
                        B.CANCELLED})
#: Batches the provider still runs (polled).
RUNNING_BATCH = frozenset({B.SUBMITTED, B.IN_PROGRESS})
#: Batches whose provider run ended and whose results wait to be stored.
ENDED_BATCH = frozenset({B.COMPLETED, B.FAILED, B.CANCELLED})

_TABLES: dict[str, tuple[str, Mapping[Any, frozenset[Any]]]] = {
    "item": ("items", ITEM_MOVES),
    "batch": ("batches", BATCH_MOVES),
}


def allowed_pairs(entity: str) -> set[tuple[str, str]]:
    """Every legal (from, to) pair of `entity` ('item' or 'batch')."""
    moves = _TABLES[entity][1]
    return {(str(frm), str(to)) for frm, targets in moves.items() for to in targets}


def check_allowed(entity: str, entity_id: str, frm: str, to: str) -> None:
    """Raise `IllegalTransition` if `frm -> to` is not an edge of `entity`'s table."""
    moves = _TABLES[entity][1]
    try:
        allowed = to in moves[frm]
    except KeyError:
        allowed = False
    if not allowed:
        raise IllegalTransition(entity, entity_id, frm, to)


def transition(
    conn: Connection,
    entity: str,
    entity_id: str,
    frm: str,
    to: str,
    reason: str,
    at: float,
    exprs: Mapping[str, str] | None = None,
    **fields: Any,
) -> None:
    """Move one row from `frm` to `to` (compare-and-set), setting `fields` too, and
    `exprs` (column -> SQL expression, e.g. `{"attempts": "attempts + 1"}`).

    Raises `IllegalTransition` before any SQL, `StaleTransition` if the row is not in `frm`.
    """
    transition_many(conn, entity, [entity_id], frm, to, reason, at, exprs, **fields)


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
    """Move every row of `entity_ids` from `frm` to `to`, all or none (the caller's transaction
    is left to roll back on `StaleTransition`). Each row gets its own history row by trigger."""
    if not entity_ids:
        return
    check_allowed(entity, entity_ids[0], frm, to)
    table = _TABLES[entity][0]
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
