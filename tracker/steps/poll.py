"""Poll: read the status of every running batch that is due, and send the cancels asked for.

The statuses come from the provider's list of batches, walked page by page, newest first, down
to the oldest due batch: 1,000 open batches cost about 10 calls, not 1,000. Only a batch the
list did not show (lists lag behind creates) is read on its own.

A 404 is a delay, not a loss, for `not_found_grace` seconds after the provider last answered
well about the batch (real servers 404 right after a create). Past that, the batch gets a
cancel (in case it is only hidden) before it is closed as vanished and its items re-queued.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from sqlalchemy import Connection

from tracker.context import Context, log
from tracker.models import Batch
from tracker.providers.base import (
    BaseBatchProvider,
    PermanentProviderError,
    ProviderBatch,
    ProviderError,
    TransientProviderError,
)
from tracker.states import BATCH_MOVES, RUNNING_BATCH, BatchStatus
from tracker.steps.common import VANISHED, provider_batch_id, provider_time_floor, store_status
from tracker.steps.failures import isolated, pausing, record_error, record_failure, refused
from tracker.steps.reconcile import needs_sweep, sweep_duplicates
from tracker.store import batches
from tracker.store.transitions import move_batch

#: Below this many due batches of one provider, reading each costs no more than a list page.
LIST_FROM = 2
#: Pages walked beyond the ones the due batches fill: other batches of the account (not the
#: tracker's, or made since) may be listed among them.
EXTRA_PAGES = 2
#: Seconds the provider's servers' clocks may disagree by.
CLOCK_SLACK = 60
#: Listed statuses stored per transaction.
RECORD_CHUNK = 500


def poll(ctx: Context) -> int:
    """Read the status of every running batch that is due. Returns how many were read."""
    due = ctx.claim_due(RUNNING_BATCH, "next_action_at", limit=ctx.batches_per_poll)
    listed = _listed_statuses(ctx, due)
    seen = sorted(((b, listed[b.provider_batch_id]) for b in due
                   if b.provider_batch_id in listed), key=lambda pair: pair[0].id)
    refused: list[tuple[Batch, ProviderBatch]] = []
    for start in range(0, len(seen), RECORD_CHUNK):
        refused += _record_listed(ctx, seen[start:start + RECORD_CHUNK])
    if any(status.is_terminal for _, status in seen):
        ctx.hand_off_to("ingest")
    for batch, status in refused:  # alone, so the error is kept on the batch
        with isolated(ctx, batch.id, "poll"):
            record_status(ctx, batch, status)
    # Read on their own at most a step's worth per run (a list that failed must not turn into
    # a thousand calls at once); the others stay due for the next run.
    unlisted = [b for b in due if b.provider_batch_id not in listed]
    for batch in unlisted[:ctx.batches_per_step]:
        with isolated(ctx, batch.id, "poll"):
            _poll_one(ctx, batch)
    return len(seen) + min(len(unlisted), ctx.batches_per_step)


def _record_listed(ctx: Context, seen: list[tuple[Batch, ProviderBatch]]
                   ) -> list[tuple[Batch, ProviderBatch]]:
    """Keep what the list said about these batches, in one transaction (a commit per batch
    would cost more than the list's calls saved), each batch in a savepoint of its own. A
    batch another worker has taken over is left alone. Returns the ones that failed, to be
    stored alone (where the error is kept on the batch); rows are locked in id order, as the
    heartbeat locks them."""
    refused: list[tuple[Batch, ProviderBatch]] = []
    with ctx.write() as conn:
        for batch, status in seen:
            if not ctx.holds_claim(conn, batch.id):
                continue
            try:
                with conn.begin_nested():
                    _store_status(conn, ctx, batch, status)
            except Exception:
                log.exception("batch %s: storing its listed status failed", batch.id)
                refused.append((batch, status))
    return refused


def _wants_plain_read(ctx: Context, batch: Batch) -> bool:
    """A read is all this batch needs (no cancel to send, no duplicate sweep)."""
    cancel_to_send = bool(batch.cancel_requested) and not ctx.provider(
        batch.provider).cancel_acknowledged(batch.provider_status)
    return (batch.provider_batch_id is not None and not cancel_to_send
            and not needs_sweep(ctx, batch))


def _listed_statuses(ctx: Context, due: list[Batch]) -> dict[str, ProviderBatch]:
    """The due batches' statuses as the providers' lists show them, by provider batch id."""
    wanted: dict[str, list[Batch]] = defaultdict(list)
    for batch in due:
        try:
            if _wants_plain_read(ctx, batch):
                wanted[batch.provider].append(batch)
        except ProviderError:
            continue  # e.g. no API key: read on its own, where the error is kept on the batch
    found: dict[str, ProviderBatch] = {}
    for name, group in wanted.items():
        if len(group) < LIST_FROM:
            continue
        try:
            found.update(_walk_list(ctx.provider_for_call(name), group))
        except ProviderError as exc:
            log.warning("provider %s: listing batches failed (%s); reading each due batch",
                        name, exc.message)
    return found


def _walk_list(provider: BaseBatchProvider, group: list[Batch]) -> dict[str, ProviderBatch]:
    """Walk the provider's list, newest first, until every batch of `group` is seen, the list
    is older than the oldest of them, or the pages they could fill (plus a margin) are read."""
    ids = {b.provider_batch_id for b in group}
    file_times = [provider_time_floor(b) for b in group]
    # A batch is created after its input file (or the clock reading before its create), by
    # the provider's clock (give or take the skew between its servers).
    oldest = (min(t for t in file_times if t is not None) - CLOCK_SLACK
              if None not in file_times else None)
    budget = (math.ceil(len(ids) / provider.list_page_size) + EXTRA_PAGES) \
        * provider.list_page_size
    found: dict[str, ProviderBatch] = {}
    for seen, status in enumerate(provider.list_batches(), start=1):
        if status.provider_batch_id in ids:
            found[status.provider_batch_id] = status
            if len(found) == len(ids):
                break
        if seen >= budget or (oldest is not None and status.created_at is not None
                              and status.created_at < oldest):
            break
    return found


def _poll_one(ctx: Context, batch: Batch) -> None:
    provider = ctx.provider_for_call(batch.provider)
    if needs_sweep(ctx, batch):
        _sweep(ctx, batch)
    try:
        status = _read_or_cancel(ctx, provider, batch)
    except TransientProviderError as exc:
        record_failure(ctx, batch.id, exc)
        return
    except PermanentProviderError as exc:
        if exc.status_code == 404:
            _not_found(ctx, provider, batch, exc)
        else:
            refused(ctx, batch.id, batch.provider, exc)
        return
    record_status(ctx, batch, status)


def _sweep(ctx: Context, batch: Batch) -> None:
    """The duplicate sweep; its failure says nothing about this batch, so it is only logged
    (the next poll sweeps again)."""
    try:
        sweep_duplicates(ctx, batch)
    except ProviderError as exc:
        log.warning("batch %s: duplicate sweep failed (%s); will sweep again", batch.id,
                    exc.message)


def _read_or_cancel(ctx: Context, provider: BaseBatchProvider, batch: Batch) -> ProviderBatch:
    """The batch's status; sends the cancel first if one is wanted and not yet taken. A cancel
    the provider refuses (OpenAI answers 409 for an ended batch, compatible servers 400) is
    followed by a read, so the batch's real end is seen and the cancel is not re-sent forever."""
    if not batch.cancel_requested or provider.cancel_acknowledged(batch.provider_status):
        return provider.poll_status(provider_batch_id(batch))
    try:
        ctx.check_lease()  # after the sweep's calls: still this worker's batch to cancel?
        return provider.cancel(provider_batch_id(batch))
    except PermanentProviderError as exc:
        if exc.status_code in (None, 404) or pausing(exc):
            raise
        log.warning("batch %s: cancel refused (%s); reading its status", batch.id, exc.message)
        return provider.poll_status(provider_batch_id(batch))


def record_status(ctx: Context, batch: Batch, status: ProviderBatch) -> None:
    with ctx.write() as conn:
        _store_status(conn, ctx, batch, status)
    if status.is_terminal:
        ctx.hand_off_to("ingest")


def _store_status(conn: Connection, ctx: Context, batch: Batch, status: ProviderBatch) -> None:
    now = ctx.now()
    target = BatchStatus(str(status.normalized_status))
    current = batches.status_of(conn, batch.id)
    if current not in RUNNING_BATCH:
        return  # moved on already (a repeated step)
    store_status(conn, batch.id, status, now, ctx.poll_interval)
    if target != current and target in BATCH_MOVES[current]:
        extra: dict[str, Any] = {}
        if status.is_terminal:
            extra = {"ended_at": now, "next_action_at": now}
        move_batch(conn, batch.id, current, target,
                   f"provider status {status.provider_status}", now, **extra)
        log.info("batch %s (%s): %s -> %s (provider: %s, %d/%d done, %d failed)",
                 batch.id, status.provider_batch_id, current, target,
                 status.provider_status, status.request_counts.completed,
                 status.request_counts.total, status.request_counts.failed)


def _not_found(ctx: Context, provider: BaseBatchProvider, batch: Batch,
               exc: PermanentProviderError) -> None:
    grace = ctx.not_found_grace(batch.provider)
    seen = max(batch.last_seen_at or 0.0, batch.submitted_at or batch.created_at)
    if ctx.now() - seen < grace:
        record_error(ctx, batch.id,
                     f"the provider answers 404 for {batch.provider_batch_id} ({exc.message}); "
                     f"taken as a delay until {grace:.0f}s after it was last seen")
        return
    try:
        ctx.check_lease()  # the 404 took a call: still this worker's batch to cancel?
        status = provider.cancel(provider_batch_id(batch))
    except TransientProviderError as cancel_error:
        record_failure(ctx, batch.id, cancel_error)  # the cancel must get an answer first
        return
    except PermanentProviderError as cancel_error:
        if cancel_error.status_code not in (404, 410):
            # Refused, but not unknown: the batch may well exist, so it is not given up.
            refused(ctx, batch.id, batch.provider, cancel_error)
            return
        log.warning("batch %s: cancel of the vanished batch: %s", batch.id,
                    cancel_error.message)
    else:
        _cancelled_by_us(ctx, batch, status)  # it answered after all
        return
    now = ctx.now()
    message = (f"vanished at the provider: 404 for more than {grace:.0f}s after it was last "
               f"seen ({exc.message}); a cancel was sent, its items are re-queued")
    with ctx.write() as conn:
        move_batch(conn, batch.id, batch.status, BatchStatus.FAILED, message, now,
                   provider_status=VANISHED, last_error=message, ended_at=now,
                   next_action_at=now)
    log.error("batch %s (%s): %s", batch.id, batch.provider_batch_id, message)


def _cancelled_by_us(ctx: Context, batch: Batch, status: ProviderBatch) -> None:
    """The cancel of a batch that answered 404 for too long was taken: the batch exists. Its
    finished lines are kept; the lines the cancel stopped go back to the queue (nobody asked
    for them to be cancelled)."""
    with ctx.write() as conn:
        batches.mark_requeue_unfinished(conn, batch.id)
    log.warning("batch %s (%s): answered the cancel after 404s; its unfinished lines will be "
                "re-queued", batch.id, batch.provider_batch_id)
    record_status(ctx, batch, status)
