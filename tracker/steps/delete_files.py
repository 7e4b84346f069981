"""Delete files: once a batch is ingested, its input, output and error files at the provider
are deleted (`delete_files: after_ingest`, the default; `never` keeps them), so they stop
counting against the account's storage. A failed delete is recorded on its row and tried again
later, backing off; it never holds up anything else. Deletes are safe to repeat: a file
already gone (404) counts as deleted."""

from __future__ import annotations

from tracker.context import Context, log
from tracker.errors import LeaseLost
from tracker.providers.base import (
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from tracker.redact import redact_secrets
from tracker.retry import backoff_delay
from tracker.steps.failures import error_kind
from tracker.store import file_deletions
from tracker.store.file_deletions import FileToDelete

#: Files deleted by one run of the step (a stop waits for the run to end).
PER_RUN = 20
#: Seconds a claimed file is not due for another worker (the delete is one short call).
CLAIM_SECONDS = 300.0
#: Backoff of a failing delete: from a minute, doubling, up to a day.
FIRST_RETRY, LAST_RETRY = 60.0, 86_400.0


def delete_files(ctx: Context) -> int:
    """Delete the files that are due, of the providers configured to delete them and not
    paused. Returns how many."""
    providers = frozenset(name for name in ctx.config.providers
                          if ctx.deletes_files(name) and not ctx.paused_reason(name))
    with ctx.write() as conn:
        due = file_deletions.claim_due(conn, ctx.now(), PER_RUN, CLAIM_SECONDS, providers)
    return sum(_delete_one(ctx, row) for row in due)


def _delete_one(ctx: Context, row: FileToDelete) -> int:
    note = None
    try:
        ctx.provider_for_call(row.provider).delete_file(row.file_id)
    except LeaseLost:
        raise
    except PermanentProviderError as exc:
        if exc.status_code != 404:
            return _failed(ctx, row, exc.message, None, error_kind(exc))
        note = "already gone (404)"
    except ProviderError as exc:
        hint = exc.retry_after if isinstance(exc, TransientProviderError) else None
        return _failed(ctx, row, exc.message, hint, error_kind(exc))
    except Exception as exc:  # e.g. a provider no longer configured: recorded, tried later
        return _failed(ctx, row, f"{type(exc).__name__}: {exc}", None, type(exc).__name__)
    with ctx.write() as conn:
        file_deletions.record_deleted(conn, row, ctx.now(), note)
    return 1


def _failed(ctx: Context, row: FileToDelete, message: str, hint: float | None,
            kind: str) -> int:
    ctx.note_error(kind, "delete_files")
    delay = backoff_delay(row.attempts + 1, hint, first=FIRST_RETRY, cap=LAST_RETRY)
    message = redact_secrets(message)
    log.warning("deleting %s file %s failed (%s); will try again in %.0fs", row.provider,
                row.file_id, message, delay)
    with ctx.write() as conn:
        file_deletions.record_failure(conn, row, message, ctx.now() + delay)
    return 0
