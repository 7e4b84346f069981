"""The pure retry policy: one outcome per result line."""

from __future__ import annotations

import pytest

from tracker.providers.base import ProviderResultRow
from tracker.retry import Outcome, backoff_delay, classify, poll_delay


def _row(status_code: int | None = None, code: str | None = None,
         success: bool = False) -> ProviderResultRow:
    return ProviderResultRow(custom_id="x", is_success=success, status_code=status_code,
                             error_code=code, error_message=f"err {status_code} {code}",
                             output_text="ok" if success else None)


@pytest.mark.parametrize(
    "row,attempts,cancelled,expected",
    [
        (_row(200, success=True), 1, False, Outcome.SUCCEEDED),  # a result
        (_row(400, "invalid_value"), 1, False, Outcome.FAILED),  # bad request: permanent
        (_row(401), 1, False, Outcome.FAILED),  # 4xx other than 408/409/429: permanent
        (_row(404), 1, False, Outcome.FAILED),
        (_row(422), 1, False, Outcome.FAILED),
        (_row(408), 1, False, Outcome.RETRY),  # timeout: send again
        (_row(409), 1, False, Outcome.RETRY),  # conflict: send again
        (_row(429, "rate_limit_exceeded"), 1, False, Outcome.RETRY),  # rate limit
        (_row(500), 1, False, Outcome.RETRY),  # server error
        (_row(503), 2, False, Outcome.RETRY),  # still under max_attempts (3)
        (_row(500), 3, False, Outcome.FAILED),  # out of attempts: fail with the last error
        (_row(None, "batch_expired"), 1, False, Outcome.RETRY),  # expired before it ran
        (_row(None, "missing_result"), 1, False, Outcome.RETRY),  # in neither file
        (_row(None, "batch_cancelled"), 1, True, Outcome.CANCELLED),  # batch was cancelled
        (_row(None, "missing_result"), 1, True, Outcome.CANCELLED),  # unrun line of a cancel
        (_row(200, success=True), 1, True, Outcome.SUCCEEDED),  # finished before the cancel
        (_row(400), 1, True, Outcome.FAILED),  # a real failure stays a failure
    ],
)
def test_classify__table(row: ProviderResultRow, attempts: int, cancelled: bool,
                         expected: Outcome) -> None:
    decision = classify(row, attempts, 3, batch_cancelled=cancelled)
    assert decision.outcome is expected
    if expected is Outcome.FAILED:
        assert row.error_message in decision.reason


def test_classify__cancel_reason_says_who() -> None:
    row = _row(None, "batch_cancelled")
    assert "outside the tracker" in classify(row, 1, 3, batch_cancelled=True).reason
    assert "tracker cancel" in classify(row, 1, 3, batch_cancelled=True,
                                        cancelled_by_tracker=True).reason


@pytest.mark.parametrize(
    "failures,hint,expected",
    [
        (1, None, 0.5),  # small first step
        (2, None, 1.0),  # doubles
        (5, None, 8.0),
        (20, None, 300.0),  # capped
        (3, 0.0, 0.0),  # retry-after: 0 means now
        (1, 7.5, 7.5),  # the provider's hint wins
        (1, 10_000.0, 300.0),  # but is capped too
    ],
)
def test_backoff_delay__table(failures: int, hint: float | None, expected: float) -> None:
    assert backoff_delay(failures, hint) == expected


@pytest.mark.parametrize(
    "age,expected",
    [
        (0, 30.0),  # a new batch: the configured interval
        (600, 30.0),  # ten minutes old: still the interval
        (1800, 90.0),  # grows with age
        (6000, 300.0),  # capped at ten times the interval
        (86400, 300.0),
    ],
)
def test_poll_delay__grows_with_age(age: float, expected: float) -> None:
    assert poll_delay(30.0, age) == expected
