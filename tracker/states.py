"""The state machine: statuses and the tables of allowed moves (`tracker.store.transitions`
makes the moves).

The move tables here are the only source of truth. `schema/` holds the same edges as rows of
`allowed_transitions`, guarded by triggers, and a test checks the two agree pair by pair.
History rows in `transitions` are written by database triggers on INSERT and on every status
UPDATE, in the same transaction, so no status changes without a row, even from raw SQL; the
`reason` comes from the `status_reason` column that `transition()` sets with the status.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from tracker.errors import IllegalTransition


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

#: entity -> (its table, its moves)
TABLES: dict[str, tuple[str, Mapping[Any, frozenset[Any]]]] = {
    "item": ("items", ITEM_MOVES),
    "batch": ("batches", BATCH_MOVES),
}


def allowed_pairs(entity: str) -> set[tuple[str, str]]:
    """Every legal (from, to) pair of `entity` ('item' or 'batch')."""
    moves = TABLES[entity][1]
    return {(str(frm), str(to)) for frm, targets in moves.items() for to in targets}


def check_allowed(entity: str, entity_id: str, frm: str, to: str) -> None:
    """Raise `IllegalTransition` if `frm -> to` is not an edge of `entity`'s table."""
    moves = TABLES[entity][1]
    try:
        allowed = to in moves[frm]
    except KeyError:
        allowed = False
    if not allowed:
        raise IllegalTransition(entity, entity_id, frm, to)
