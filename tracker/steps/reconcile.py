"""Reconcile: find the provider batches a create whose answer was lost may have made.

Searches go by the provider's own clock (the uploaded input file's `created_at`, or the clock
read before the create at a provider that takes requests inline), never the local one, so a
local clock that runs fast or slow cannot hide a batch. A second provider batch
for one local row is recorded as a `duplicate_of` row with a cancel requested: the poll step
cancels it and ingest discards its results.
"""

from __future__ import annotations

from sqlalchemy import Connection

from tracker.context import Context, log, new_batch_id
from tracker.models import Batch
from tracker.providers.base import NormalizedStatus, ProviderBatch
from tracker.states import BatchStatus
from tracker.steps.common import search_from, store_status, sweep_window
from tracker.steps.reconcile_by_count import Candidates, find_by_count
from tracker.store import batches
from tracker.store.transitions import move_batch


def find_ours(ctx: Context, batch: Batch) -> Candidates:
    """The provider batches a create of this row made: found by the local id in their
    metadata, or, at a provider without metadata, by time and size (`reconcile_by_count`)."""
    provider = ctx.provider_for_call(batch.provider)
    if not provider.has_batch_metadata:
        return find_by_count(ctx, batch, provider, search_from(batch))
    return Candidates(ours=provider.find_batches_by_metadata(
        provider.metadata_key, batch.id, created_after=search_from(batch)))


def needs_sweep(ctx: Context, batch: Batch) -> bool:
    """A batch whose create was sent more than once may have a twin at the provider that the
    list had not shown yet when reconcile looked: look again at every poll for the sweep
    window after the last create (and once more before ingest)."""
    if batch.create_attempts <= 1 or batch.create_attempted_at is None:
        return False
    return ctx.now() - batch.create_attempted_at < sweep_window(ctx, batch)


def adopt(ctx: Context, batch: Batch, found: list[ProviderBatch]) -> None:
    """Keep one provider batch for this pending row and record the others as duplicates to
    cancel, in one transaction (a crash between the two would leave them inconsistent)."""
    now = ctx.now()
    provider = ctx.provider(batch.provider)
    with ctx.write() as conn:
        recorded = batches.known_provider_ids(conn, batch.id)
        ranked = sorted(found, key=lambda s: (
            s.provider_batch_id in recorded,
            s.normalized_status in (NormalizedStatus.FAILED, NormalizedStatus.CANCELLED)
            or provider.cancel_acknowledged(s.provider_status),
            s.created_at or 0, s.provider_batch_id))
        keep, extras = ranked[0], ranked[1:]
        reason = f"adopted {keep.provider_batch_id} by reconcile (create answer was lost)"
        if extras:
            reason += f"; {len(extras)} duplicate(s) cancelled"
        if not record_created(conn, batch.id, keep, reason, now, ctx.poll_interval):
            return
        record_duplicates(conn, batch, keep.provider_batch_id, extras, now)
    log.warning("batch %s: %s", batch.id, reason)


def sweep_duplicates(ctx: Context, batch: Batch) -> None:
    """Look again for provider batches carrying this local id and cancel all but the kept one:
    one may have appeared after reconcile looked (a list that lags)."""
    extras = [s for s in find_ours(ctx, batch).ours
              if s.provider_batch_id != batch.provider_batch_id]
    if not extras:
        return
    with ctx.write() as conn:
        added = record_duplicates(conn, batch, batch.provider_batch_id, extras, ctx.now())
    if added:
        log.warning("batch %s: found %d duplicate provider batch(es); cancelling them",
                    batch.id, added)


def record_created(conn: Connection, batch_id: str, status: ProviderBatch, reason: str,
                   now: float, poll_interval: float) -> bool:
    """Move a pending row to the provider's status. False if it is no longer pending (a
    repeated step, or another daemon recorded it first)."""
    if batches.status_of(conn, batch_id) != BatchStatus.PENDING:
        return False
    store_status(conn, batch_id, status, now, poll_interval)
    move_batch(conn, batch_id, BatchStatus.PENDING, BatchStatus(str(status.normalized_status)),
               reason, now, provider_batch_id=status.provider_batch_id, submitted_at=now,
               failures=0, last_error=None)
    return True


def record_duplicates(conn: Connection, batch: Batch, kept: str | None,
                      extras: list[ProviderBatch], now: float) -> int:
    """Insert a `duplicate_of` row for each unknown extra provider batch, with a cancel
    requested. Returns how many were new."""
    known = batches.known_provider_ids(conn, batch.id)
    added = 0
    for extra in extras:
        if extra.provider_batch_id in known or extra.provider_batch_id == kept:
            continue
        batches.insert_duplicate(
            conn, batch, new_batch_id(), extra, _open_status(extra),
            f"duplicate provider batch for {batch.id} (kept {kept}); cancelling it, its "
            "results are discarded", now)
        added += 1
    return added


def _open_status(status: ProviderBatch) -> BatchStatus:
    """A duplicate's row starts in the provider's status; one still being validated counts as
    in progress (a row is only `submitted` by its own create)."""
    normalized = BatchStatus(str(status.normalized_status))
    return BatchStatus.IN_PROGRESS if normalized == BatchStatus.SUBMITTED else normalized
