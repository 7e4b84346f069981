"""Pure decisions: what happens to an item after its batch ends, and how long to back off."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tracker.providers.base import MISSING_RESULT_CODE, ProviderResultRow
from tracker.states import ItemStatus

#: HTTP statuses of a failed line that are worth sending again.
TRANSIENT_LINE_STATUSES = frozenset({408, 409, 429})
CANCELLED_LINE_CODES = frozenset({"batch_cancelled", "cancelled"})


class Outcome(StrEnum):
    SUCCEEDED = ItemStatus.SUCCEEDED.value
    RETRY = ItemStatus.QUEUED.value
    FAILED = ItemStatus.FAILED.value
    CANCELLED = ItemStatus.CANCELLED.value


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    error_message: str | None = None
    error_code: str | None = None
    error_status: int | None = None
    #: A retry that does not use up an attempt (the send was not the item's fault).
    refund: bool = False


def is_unfinished(row: ProviderResultRow) -> bool:
    """A line its batch's cancel stopped, or one in neither file: it never ran."""
    return row.error_code in CANCELLED_LINE_CODES or row.error_code == MISSING_RESULT_CODE


def is_permanent_line(row: ProviderResultRow) -> bool:
    """HTTP 4xx other than 408/409/429 cannot succeed by sending the same request again."""
    code = row.status_code
    return code is not None and 400 <= code < 500 and code not in TRANSIENT_LINE_STATUSES


def classify(
    row: ProviderResultRow,
    attempts: int,
    max_attempts: int,
    *,
    batch_cancelled: bool = False,
    cancelled_by_tracker: bool = False,
) -> Decision:
    """Decide one item's outcome from its result line.

    `attempts` counts the sends that use up the item's attempts, this one included.
    """
    if row.is_success:
        return Decision(Outcome.SUCCEEDED, "result stored")

    def decide(outcome: Outcome, reason: str) -> Decision:
        return Decision(outcome, reason, error_message=row.error_message,
                        error_code=row.error_code, error_status=row.status_code)

    if batch_cancelled and is_unfinished(row):
        who = "by tracker cancel" if cancelled_by_tracker else "outside the tracker"
        return decide(Outcome.CANCELLED, f"batch was cancelled {who}")
    if is_permanent_line(row):
        return decide(Outcome.FAILED, f"permanent error: {row.error_message}")
    if attempts >= max_attempts:
        return decide(Outcome.FAILED,
                      f"gave up after {attempts} attempts; last error: {row.error_message}")
    return decide(Outcome.RETRY, f"retryable error: {row.error_message}")


def backoff_delay(
    failures: int, hint: float | None = None, *, first: float = 0.5, cap: float = 300.0
) -> float:
    """Seconds to wait after `failures` consecutive failures (>= 1).

    The provider's hint wins (`retry-after: 0` means now), capped; otherwise the delay doubles
    from `first` up to `cap`.
    """
    if hint is not None:
        return min(max(hint, 0.0), cap)
    return min(cap, first * 2.0 ** max(failures - 1, 0))


def poll_delay(poll_interval: float, batch_age: float) -> float:
    """Seconds until the next status check: `poll_interval` for a young batch, growing with
    its age up to ten times that (a batch that has run 100 minutes is unlikely to end in the
    next 30 seconds, and a thousand open batches should not poll each every 30 s)."""
    return poll_interval * min(max(1.0, batch_age / 600.0), 10.0)
