"""What a step does when handling one batch fails: record it on that batch, back off, go on.

A failure is kept in `last_error` (shown by `tracker status`) with a back-off in
`next_action_at`, so the batch is not first in line again at the next tick and nothing behind
it waits. Only losing the lease stops a step: the daemon must stop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tracker.context import Context, log
from tracker.errors import ClaimLost, LeaseLost, StaleBatch, StaleTransition
from tracker.providers.base import PermanentProviderError, ProviderError, TransientProviderError
from tracker.retry import backoff_delay
from tracker.store import batches

#: Errors that stop all submissions to a provider until a probe succeeds.
PAUSING_CODES = frozenset({"insufficient_quota", "invalid_api_key", "missing_api_key",
                           "billing_error"})
PAUSING_STATUSES = frozenset({401, 403})
PROBE_INTERVAL = 60.0


def record_failure(ctx: Context, batch_id: str, exc: ProviderError,
                   delay: float | None = None) -> None:
    """A call about this batch failed: keep the error, try again after a back-off."""
    ctx.note_error(error_kind(exc))
    record_error(ctx, batch_id, exc.message,
                 hint=exc.retry_after if isinstance(exc, TransientProviderError) else None,
                 delay=delay)


def error_kind(exc: ProviderError) -> str:
    """A provider error's kind for the metrics: its code, else its HTTP status, else its
    class."""
    return exc.code or (str(exc.status_code) if exc.status_code else type(exc).__name__)


def record_error(ctx: Context, batch_id: str, message: str, *, hint: float | None = None,
                 delay: float | None = None) -> float:
    """Keep `message` on the batch and push its next action back. Returns the wait."""
    now = ctx.now()
    with ctx.write() as conn:
        failures = batches.add_failure(conn, batch_id)
        wait = delay if delay is not None else backoff_delay(
            failures, hint, first=min(ctx.poll_interval, 1.0),
            cap=max(ctx.poll_interval * 10, 60.0))
        batches.set_error(conn, batch_id, message, now + wait, now)
    log.warning("batch %s: %s (try %d, next in %.1fs)", batch_id, message, failures, wait)
    return wait


def refused(ctx: Context, batch_id: str, provider: str, exc: PermanentProviderError) -> None:
    """A call about a running or ended batch was refused (bad key, no quota, bad request):
    pause submissions if the provider's answer says so, and ask again after a while."""
    if pausing(exc):
        ctx.pause_provider(provider, exc.message, PROBE_INTERVAL)
    record_failure(ctx, batch_id, exc, delay=max(PROBE_INTERVAL, ctx.poll_interval))


def pausing(exc: PermanentProviderError) -> bool:
    """A bad key or no quota: every call would fail alike until someone fixes the account."""
    return exc.code in PAUSING_CODES or exc.status_code in PAUSING_STATUSES


@contextmanager
def isolated(ctx: Context, batch_id: str, step: str) -> Iterator[None]:
    """Run one batch's part of a step; an unexpected error (a row the database refuses, a
    full disk, a bug) is recorded on this batch and the step goes on with the next one."""
    try:
        with ctx.handling(batch_id, step):
            yield
    except LeaseLost:
        raise
    except ClaimLost as exc:
        log.warning("batch %s: %s; %s left it alone", batch_id, exc, step)
    except (StaleTransition, StaleBatch) as exc:
        log.info("batch %s: %s moved it first; %s left it alone (%s)", batch_id,
                 "another step", step, exc)
    except Exception as exc:
        ctx.note_error(type(exc).__name__, step)
        log.exception("batch %s: %s failed", batch_id, step)
        message = f"{step} failed: {type(exc).__name__}: {exc}"[:2000]
        try:
            record_error(ctx, batch_id, message)
        except LeaseLost:
            raise
        except Exception:
            log.exception("batch %s: could not record the failure; holding it back", batch_id)
            ctx.hold_back(batch_id, 60.0)
