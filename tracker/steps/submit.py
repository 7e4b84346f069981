"""Submit: upload and create every due `pending` batch, reconciling first where a create may
already have reached the provider.

Intent first, then the call, then its outcome: the input file id is stored after the upload;
`create_attempted_at` is stored (fenced, and checked to match the row) before the create, which
is never retried blindly. After a create whose answer was lost, no second create is sent until
the provider's list has had `list_lag_grace` seconds to show the first one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from sqlalchemy import Connection

from tracker.context import Context, log
from tracker.crashpoints import crash_point
from tracker.models import Batch
from tracker.providers.base import (
    BaseBatchProvider,
    BatchTooLarge,
    InvalidItemError,
    PermanentProviderError,
    PreparedBatch,
    ProviderBatch,
    ProviderError,
    TransientProviderError,
)
from tracker.states import BatchStatus, ItemStatus
from tracker.steps.budget import admit
from tracker.steps.failures import isolated, pausing, record_error, record_failure, refused
from tracker.steps.reconcile import adopt, find_ours, record_created
from tracker.store import batches, items
from tracker.store.engine import read
from tracker.store.transitions import move_batch, move_item, move_items


def submit(ctx: Context) -> int:
    """Upload and create every due `pending` batch. Returns how many batches were handled."""
    handled = 0
    due = [batch for batch in ctx.claim_due(frozenset({BatchStatus.PENDING}), "created_at")
           if batch.cancel_requested or not ctx.paused_reason(batch.provider)]
    if due:
        ctx.hand_off_to("pack")  # these are taken: pack the next batch meanwhile
    for batch in due:
        with isolated(ctx, batch.id, "submit"):
            _submit_guarded(ctx, batch)
        handled += 1
    return handled


#: A create refused this many times in a row for the same reason, each time naming another
#: request, is refused for a reason all its requests share: the batch fails, not its items
#: one by one (each try sends the whole batch again).
SAME_REFUSALS = 3
_REQUEST_INDEX = re.compile(r"\brequests\.\d+\.")

#: After an earlier create whose answer was lost, a refused create is tried again (after a
#: reconcile) until the row has sent this many; then the row fails (and is watched for a ghost).
MAX_CREATE_ATTEMPTS = 5


class _Refused(Exception):
    """The provider refused this batch in a way that proves no provider batch was made."""

    def __init__(self, error: PermanentProviderError) -> None:
        super().__init__(error.message)
        self.error = error


def _submit_guarded(ctx: Context, batch: Batch) -> None:
    try:
        _submit_one(ctx, batch)
    except _Refused as refusal:
        _submit_refused(ctx, batch, refusal.error)
    except TransientProviderError as exc:
        record_failure(ctx, batch.id, exc)
    except PermanentProviderError as exc:
        # A refused list, or a refused create after one whose answer was lost: a batch may
        # exist, so the row stays pending (and a bad key or no quota pauses the provider).
        refused(ctx, batch.id, batch.provider, exc)
    else:
        ctx.resume_provider(batch.provider)


def _submit_one(ctx: Context, batch: Batch) -> None:
    if batch.create_attempted_at is not None:
        found = find_ours(ctx, batch)
        if found.ours:
            adopt(ctx, batch, found.ours)
            return
        if found.undecided:
            _waiting_for_undecided(ctx, batch, len(found.undecided))
            return
        if _waiting_for_list(ctx, batch):
            return
    if batch.cancel_requested:
        _finish_cancelled_pending(ctx, batch)
        return
    if (batch.create_attempted_at is None
            and ctx.endpoint(batch.provider, batch.model) != batch.endpoint):
        _requeue_for_new_endpoint(ctx, batch)
        return
    if not admit(ctx, batch):
        return  # waits for budget, with the reason on it
    provider = ctx.provider_for_call(batch.provider)
    if provider.sends_requests_inline:
        status = _create_inline(ctx, batch, provider)
        if status is None:
            return  # every item was refused: the batch ended
    else:
        input_file_id = batch.input_file_id or _upload(ctx, batch, provider)
        if input_file_id is None:
            return  # every item was refused: the batch ended
        _record_create_intent(ctx, batch)
        crash_point("before_create")
        ctx.check_lease()
        crash_point("before_create_call")
        status = _create(ctx, batch, provider,
                         lambda: provider.create_batch(input_file_id, batch.endpoint,
                                                       {provider.metadata_key: batch.id}))
    crash_point("after_create")
    with ctx.write() as conn:
        recorded = record_created(conn, batch.id, status, f"created {status.provider_batch_id}",
                                  ctx.now(), ctx.poll_interval)
    if recorded:
        log.info("batch %s: submitted as %s (%d items)", batch.id, status.provider_batch_id,
                 batch.item_count)


def _waiting_for_list(ctx: Context, batch: Batch) -> bool:
    """After a create whose answer was lost and that the list does not show (yet), wait until
    the list has had time to show it: creating again at once would pay twice."""
    grace = ctx.list_lag_grace(batch.provider)
    waited = ctx.now() - (batch.create_attempted_at or 0.0)
    if waited >= grace:
        return False
    record_error(ctx, batch.id,
                 f"the answer to create was lost and the provider's list does not show the "
                 f"batch; not creating again before {grace:.0f}s have passed "
                 f"({waited:.0f}s so far)",
                 delay=min(grace - waited, max(ctx.poll_interval, 1.0)))
    return True


def _waiting_for_undecided(ctx: Context, batch: Batch, undecided: int) -> None:
    """Provider batches that may be this row's are still running: creating now could pay
    twice, so the row waits until they end and their results tell whose they are."""
    record_error(ctx, batch.id,
                 f"the answer to create was lost and {undecided} provider batch(es) of this "
                 "size may be this batch's or another's; not creating again until they end "
                 "and their results' custom ids tell", delay=max(ctx.poll_interval, 1.0))


def _create_inline(ctx: Context, batch: Batch,
                   provider: BaseBatchProvider) -> ProviderBatch | None:
    """Create a batch whose requests go in the call itself. The provider's clock is read and
    kept first (a lost answer is searched for from it), then the requests are built, their
    custom ids stored with the create intent in one transaction, and the create sent."""
    if batch.provider_time_at_intent is None:
        provider_time = provider.provider_time()
        if provider_time is not None:  # else reconcile searches a day back, never by our clock
            with ctx.write() as conn:
                batches.record_provider_time(conn, batch.id, provider_time, ctx.now())
    prepared = _build_or_refuse(ctx, batch, provider)
    refusals: list[str] = []
    while prepared is not None:
        sent_as = _sent_under_other_ids(ctx, batch, provider)
        try:
            with ctx.write() as conn:
                items.record_custom_ids(conn, batch.id, sent_as)
                batches.record_create_intent(conn, batch.id, ctx.now(), prepared.line_count)
            crash_point("before_create")
            ctx.check_lease()
            crash_point("before_create_call")
            return _create(ctx, batch, provider,
                           functools.partial(provider.create_batch_inline, prepared))
        except InvalidItemError as exc:  # the create was refused for one request's sake
            refusals.append(_REQUEST_INDEX.sub("requests.N.", exc.message))
            if refusals[-SAME_REFUSALS:] == [refusals[-1]] * SAME_REFUSALS:
                raise _Refused(exc) from exc  # every request has it: the batch is refused
            item_of = {custom_id: item_id for item_id, custom_id in sent_as.items()}
            if not _fail_item(ctx, batch, item_of.get(exc.custom_id, exc.custom_id),
                              exc.message):
                return None
        finally:
            prepared.jsonl_path.unlink(missing_ok=True)
        prepared = _build_or_refuse(ctx, batch, provider)
    return None


def _sent_under_other_ids(ctx: Context, batch: Batch,
                          provider: BaseBatchProvider) -> dict[str, str]:
    """item id -> custom id, for the batch's items the provider cannot take under their id."""
    return {item_id: custom_id for item_id in items.ids_in_batch(ctx.engine, batch.id)
            if (custom_id := provider.wire_custom_id(item_id)) != item_id}


def _create(ctx: Context, batch: Batch, provider: BaseBatchProvider,
            send: Callable[[], ProviderBatch]) -> ProviderBatch:
    """Send the create once; a refusal that proves no batch was made clears the intent."""
    try:
        return send()
    except ProviderError as exc:
        if not _not_created(exc):  # a timeout, a dropped connection, a 5xx, an unreadable answer
            raise TransientProviderError(
                f"the answer to create was lost ({exc.message}); the batch may exist: the "
                "provider's batches are searched before any new create",
                retry_after=getattr(exc, "retry_after", None), status_code=exc.status_code,
                code="create_answer_lost") from exc
        one_request = isinstance(exc, InvalidItemError)
        earlier_lost = batch.create_attempted_at is not None
        # A refusal made no batch: it counts as an attempt only after a lost answer (where the
        # refusals are capped), so `create_attempts > 1` means a twin may exist.
        _forget_create_intent(ctx, batch, uncount=one_request or not earlier_lost)
        if one_request:
            raise  # one request is at fault: it fails alone and the rest are sent again
        if (isinstance(exc, PermanentProviderError) and not pausing(exc)
                and (not earlier_lost or batch.create_attempts + 1 >= MAX_CREATE_ATTEMPTS)):
            raise _Refused(exc) from exc
        raise


def _not_created(exc: ProviderError) -> bool:
    """The provider answered the create with a refusal (4xx, 429): no batch was made, so the
    next attempt need not wait for the list. Timeouts, dropped connections and 5xx may hide a
    batch that was made."""
    return exc.status_code is not None and 400 <= exc.status_code < 500


def _record_create_intent(ctx: Context, batch: Batch) -> None:
    with ctx.write() as conn:
        batches.record_create_intent(conn, batch.id, ctx.now())


def _forget_create_intent(ctx: Context, batch: Batch, *, uncount: bool = False) -> None:
    with ctx.write() as conn:
        batches.forget_create_intent(conn, batch.id, batch.create_attempted_at,
                                     uncount=uncount)


def _build_or_refuse(ctx: Context, batch: Batch,
                     provider: BaseBatchProvider) -> PreparedBatch | None:
    """`_build`, where a refusal of the whole batch (e.g. the model is no longer configured)
    ends the row, unless it pauses the provider."""
    try:
        return _build(ctx, batch, provider)
    except PermanentProviderError as exc:
        if pausing(exc):
            raise
        raise _Refused(exc) from exc


def _upload(ctx: Context, batch: Batch, provider: BaseBatchProvider) -> str | None:
    prepared = _build_or_refuse(ctx, batch, provider)
    if prepared is None:
        return None
    try:
        ctx.check_lease()  # building the file took a while: still this worker's batch?
        uploaded = provider.upload_input(prepared)
    except PermanentProviderError as exc:
        if pausing(exc):
            raise
        raise _Refused(exc) from exc  # no create was sent: nothing can exist at the provider
    finally:
        prepared.jsonl_path.unlink(missing_ok=True)
    with ctx.write() as conn:
        batches.record_upload(conn, batch.id, uploaded.file_id, uploaded.created_at, ctx.now())
    crash_point("after_upload")
    return uploaded.file_id


def _build(ctx: Context, batch: Batch, provider: BaseBatchProvider) -> PreparedBatch | None:
    """The batch's input file. An item the provider cannot take fails alone and the file is
    built again without it; items beyond the provider's size limit go back to the queue.
    None when no item is left."""
    while True:
        try:
            return build_input(ctx, batch, provider)
        except InvalidItemError as exc:
            if not _fail_item(ctx, batch, exc.custom_id, exc.message):
                return None
        except BatchTooLarge as exc:
            if not _shrink(ctx, batch, exc.fits, exc.message):
                return None


def build_input(ctx: Context, batch: Batch, provider: BaseBatchProvider) -> PreparedBatch:
    with read(ctx.engine) as conn:
        return provider.prepare_payloads(
            items.stream_in_batch(conn, batch.id, stored=provider.takes_stored_payloads),
            batch.model,
            ctx.mode(batch.provider, batch.model),
            metadata={provider.metadata_key: batch.id}, directory=ctx.work_dir,
        )


def _fail_item(ctx: Context, batch: Batch, item_id: str, message: str) -> bool:
    """Fail one refused item and take it out of the batch. Returns whether items are left."""
    now = ctx.now()
    with ctx.write() as conn:
        move_item(conn, item_id, ItemStatus.IN_BATCH, ItemStatus.FAILED,
                  f"refused before the batch was sent: {message}", now, error_message=message,
                  error_code="invalid_item", finished_at=now)
        left = _set_item_count(conn, batch.id, now)
    log.error("batch %s: item %s refused before the batch was sent: %s", batch.id, item_id, message)
    return left > 0


def _shrink(ctx: Context, batch: Batch, fits: int, message: str) -> bool:
    """Keep the first `fits` items in the batch; the rest wait for the next one (this send
    did not happen, so it uses no attempt). Returns whether items are left."""
    ids = items.ids_in_batch(ctx.engine, batch.id)
    if fits == 0:
        return _fail_item(ctx, batch, ids[0], f"larger than one batch may be ({message})")
    now = ctx.now()
    with ctx.write() as conn:
        move_items(conn, ids[fits:], ItemStatus.IN_BATCH, ItemStatus.QUEUED,
                   f"did not fit in batch {batch.id} ({message})", now,
                   {"attempts": "attempts - 1"}, not_before=now)
        left = _set_item_count(conn, batch.id, now)
    log.warning("batch %s: %s; %d items kept, %d re-queued", batch.id, message, fits,
                len(ids) - fits)
    return left > 0


def _requeue_for_new_endpoint(ctx: Context, batch: Batch) -> None:
    """The model's mode changed in the config since the batch was packed (and nothing was
    created for it): its items go back to the queue, without using an attempt, to be packed
    for the new endpoint; the empty batch is closed."""
    ids = items.ids_in_batch(ctx.engine, batch.id)
    endpoint = ctx.endpoint(batch.provider, batch.model)
    now = ctx.now()
    reason = (f"{batch.model} now goes to {endpoint}, not {batch.endpoint} as when batch "
              f"{batch.id} was packed; re-queued")
    with ctx.write() as conn:
        move_items(conn, ids, ItemStatus.IN_BATCH, ItemStatus.QUEUED, reason, now,
                   {"attempts": "attempts - 1"}, not_before=now)
        batches.set_item_count(conn, batch.id, 0, now)
        move_batch(conn, batch.id, BatchStatus.PENDING, BatchStatus.FAILED,
                   f"the model's mode changed since it was packed; its {len(ids)} items went "
                   "back to the queue", now, ended_at=now, next_action_at=now)
    log.warning("batch %s: %s", batch.id, reason)


def _set_item_count(conn: Connection, batch_id: str, now: float) -> int:
    """Recount a pending batch's items; a batch left empty ends `failed` (ingest closes it)."""
    left = items.count_in_batch(conn, batch_id)
    batches.set_item_count(conn, batch_id, left, now)
    if left == 0:
        move_batch(conn, batch_id, BatchStatus.PENDING, BatchStatus.FAILED,
                   "every item was refused before the batch was sent", now, ended_at=now,
                   next_action_at=now)
    return left


def _finish_cancelled_pending(ctx: Context, batch: Batch) -> None:
    now = ctx.now()
    with ctx.write() as conn:
        move_batch(conn, batch.id, BatchStatus.PENDING, BatchStatus.CANCELLED,
                   "cancelled before it reached the provider", now,
                   ended_at=now, next_action_at=now)


def _submit_refused(ctx: Context, batch: Batch, exc: PermanentProviderError) -> None:
    if pausing(exc):
        refused(ctx, batch.id, batch.provider, exc)  # waits, pending, for the provider
        return
    now = ctx.now()
    with ctx.write() as conn:
        move_batch(conn, batch.id, BatchStatus.PENDING, BatchStatus.FAILED,
                   f"refused by the provider: {exc.message}", now,
                   last_error=exc.message, ended_at=now, next_action_at=now)
    log.error("batch %s: refused by the provider: %s", batch.id, exc.message)
