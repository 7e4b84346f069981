"""Ingest: store the outcome of every item of an ended batch, then close the batch.

Downloads happen with no transaction open; then the items still `in_batch` in this batch move
to their outcomes in runs of up to `OUTCOME_CHUNK` neighbouring ids, one transaction each
(adding the run to the batch's counts), and a last transaction moves the batch to `ingested`.
Between runs the other steps get the database (SQLite has one writer: a 50,000-line batch in
one transaction held polling and submitting up for seconds). A second run finds only the items
not yet stored `in_batch`, so a crash anywhere is repaired by running it again.

Providers are eventually consistent: a batch may end before its result files can be read. Lines
the counts promise are never re-queued while their file may still come: the batch waits (with
back-off, shown in `status`) for `not_found_grace` seconds, then what can be downloaded is
stored file by file and only the lines of a file that never came count as missing.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Connection

from tracker.context import Context, log
from tracker.crashpoints import crash_point
from tracker.errors import StaleBatch
from tracker.models import Batch
from tracker.providers.base import (
    NormalizedStatus,
    PermanentProviderError,
    ProviderBatch,
    ProviderError,
    ProviderResultRow,
    RequestCounts,
    ResultsNotReady,
    TransientProviderError,
)
from tracker.retry import Decision, Outcome, backoff_delay, classify, is_unfinished
from tracker.states import ENDED_BATCH, BatchStatus, ItemStatus
from tracker.steps.common import VANISHED, sweep_window
from tracker.steps.failures import isolated, record_error, record_failure, refused
from tracker.steps.outcome_spool import OutcomeSpool
from tracker.steps.reconcile import sweep_duplicates
from tracker.store import batches, file_deletions, items, ledger, spend
from tracker.store.engine import read
from tracker.store.transitions import ItemOutcome, move_batch, record_item_outcomes

TOKEN_LIMIT_CODE = "token_limit_exceeded"


def ingest(ctx: Context) -> int:
    """Ingest every ended batch that is due. Returns how many were closed."""
    closed = 0
    for batch in ctx.claim_due(ENDED_BATCH, "next_action_at"):
        with isolated(ctx, batch.id, "ingest"):
            closed += _ingest_guarded(ctx, batch)
    if closed:
        ctx.hand_off_to("delete_files")
    return closed


def _ingest_guarded(ctx: Context, batch: Batch) -> bool:
    try:
        ingest_batch(ctx, batch)
        return True
    except ResultsNotReady as exc:
        return _results_missing(ctx, batch, exc)
    except TransientProviderError as exc:
        record_failure(ctx, batch.id, exc)
    except PermanentProviderError as exc:
        if exc.status_code == 404:
            return _results_missing(ctx, batch, exc)
        refused(ctx, batch.id, batch.provider, exc)  # a bad key or no quota: try again later
    return False


def _results_missing(ctx: Context, batch: Batch, exc: ProviderError) -> bool:
    """A result file (or the batch itself) cannot be downloaded whole yet: wait, up to the
    grace period counted from the first time it was missed; then store what there is, file by
    file (a file that never came whole counts as missing)."""
    now = ctx.now()
    since = batch.results_missing_since
    if since is None:
        since = now
        with ctx.write() as conn:
            batches.mark_results_missing(conn, batch.id, now)
    grace = ctx.not_found_grace(batch.provider)
    if now - since < grace:
        record_error(ctx, batch.id,
                     f"results not downloadable yet: {exc.message}; waiting up to "
                     f"{grace:.0f}s before counting their lines as missing",
                     hint=exc.retry_after if isinstance(exc, TransientProviderError) else None)
        return False
    log.error("batch %s: results still not downloadable after %.0fs: %s", batch.id,
              now - since, exc.message)
    ingest_batch(ctx, batch, skip_unavailable=True)
    return True


def ingest_batch(ctx: Context, batch: Batch, *, skip_unavailable: bool = False) -> None:
    maybe_twin = batch.create_attempts > 1 or (batch.provider_batch_id is None
                                               and batch.create_attempted_at is not None)
    if maybe_twin and _watching_for_a_ghost(ctx, batch):
        return
    if batch.duplicate_of is not None:
        _close_duplicate(ctx, batch, skip_unavailable)
        return
    if batch.item_count == 0:
        _close(ctx, batch, [], "no items left")
        return
    if batch.provider_batch_id is None:
        rows = _missing_rows(ctx, batch, message=batch.last_error or "never submitted")
        _close(ctx, batch, rows, "never reached the provider", not_before=_backoff(ctx, batch))
        return
    if batch.provider_status == VANISHED:
        _close(ctx, batch, _missing_rows(ctx, batch, message=batch.last_error),
               "vanished at the provider")
        return
    if (ctx.provider(batch.provider).failed_validation(batch.provider_status)
            and not (batch.output_file_id or batch.error_file_id)):
        _ingest_validation_failure(ctx, batch)
        return
    with read(ctx.engine) as conn:  # read once: the expected ids and, at _close, the sends
        attempts = items.attempts_used(conn, batch.id)
        item_of = items.sent_as(conn, batch.id)
    custom_of = {item_id: custom_id for custom_id, item_id in item_of.items()}
    provider = ctx.provider_for_call(batch.provider)
    with provider.fetch_results(batch.provider_batch_id,
                                expected_custom_ids=[custom_of.get(i, i) for i in attempts],
                                directory=results_directory(ctx, batch.id),
                                skip_unavailable=skip_unavailable,
                                last_seen=_last_seen(batch)) as results:
        crash_point("before_ingest_write")
        reason = f"results stored (provider status {results.status.provider_status})"
        if skip_unavailable:
            reason += "; lines of result files that never came whole count as missing"
        _close(ctx, batch, by_item_id(results, item_of), reason, attempts=attempts,
               result_files=(results.status.output_file_id, results.status.error_file_id))


def _close_duplicate(ctx: Context, batch: Batch, skip_unavailable: bool) -> None:
    """A second provider batch for one row: its results are discarded, but the lines it ran
    before it was cancelled were billed, so their usage goes to the ledger as waste."""
    provider_batch_id = batch.provider_batch_id
    if provider_batch_id is None or not (batch.output_file_id or batch.request_completed):
        _close(ctx, batch, [], "duplicate provider batch: results discarded")
        return
    provider = ctx.provider_for_call(batch.provider)
    with provider.fetch_results(provider_batch_id,
                                directory=results_directory(ctx, batch.id),
                                skip_unavailable=skip_unavailable,
                                last_seen=_last_seen(batch)) as results:
        with read(ctx.engine) as conn:
            item_of = items.sent_as(conn, batch.duplicate_of or batch.id)
        waste = [line for line in by_item_id(results, item_of) if line.is_success]
    _close(ctx, batch, [], f"duplicate provider batch: results discarded; {len(waste)} lines "
           "it ran are recorded as waste", waste=waste)


def by_item_id(rows: Iterable[ProviderResultRow],
               item_of: dict[str, str]) -> Iterable[ProviderResultRow]:
    """The result lines with each custom id an item was sent under turned back into the
    item's id (`item_of`: custom id -> item id, for the items not sent under their own)."""
    if not item_of:
        return rows
    return (replace(row, custom_id=item_of.get(row.custom_id, row.custom_id)) for row in rows)


def _last_seen(batch: Batch) -> ProviderBatch | None:
    """The provider's status as the poll stored it (the batch's status is its normalized
    one), or None when none was stored."""
    if (batch.provider_batch_id is None or batch.provider_status is None
            or batch.status not in ENDED_BATCH):
        return None
    return ProviderBatch(
        provider_batch_id=batch.provider_batch_id, provider_status=batch.provider_status,
        normalized_status=NormalizedStatus(str(batch.status)),
        request_counts=RequestCounts(batch.request_total, batch.request_completed,
                                     batch.request_failed),
        output_file_id=batch.output_file_id, error_file_id=batch.error_file_id)


def _watching_for_a_ghost(ctx: Context, batch: Batch) -> bool:
    """A create of this row was sent more than once, or its answer was lost: look once more
    for provider batches carrying its id (cancelled as duplicates). A row that never got a
    provider batch stays open for the sweep window, since a lagging list may show one late."""
    try:
        sweep_duplicates(ctx, batch)
    except ProviderError as exc:
        record_failure(ctx, batch.id, exc)
        return True
    if (batch.provider_batch_id is not None or batch.duplicate_of is not None
            or batch.create_attempted_at is None):  # None: every create was refused outright
        return False
    left = sweep_window(ctx, batch) - (ctx.now() - batch.create_attempted_at)
    if left <= 0:
        return False
    record_error(ctx, batch.id, f"a create of this batch may have reached the provider; "
                 f"watching the provider's list for {left:.0f}s more before closing it",
                 delay=min(left, max(ctx.poll_interval * 10, 5.0)))
    return True


def results_directory(ctx: Context, batch_id: str) -> Path:
    """Where the verified result files of a batch are kept until it is closed."""
    return ctx.work_dir / f"results-{batch_id}"


def _backoff(ctx: Context, batch: Batch) -> float:
    """When the items of a batch that failed as a whole may be packed again: later with each
    attempt they have used, so a refusal that repeats cannot loop."""
    sent = items.most_attempts_used(ctx.engine, batch.id)
    return ctx.now() + backoff_delay(sent, None, first=max(ctx.poll_interval, 1.0),
                                     cap=3600.0)


def _missing_rows(ctx: Context, batch: Batch,
                  message: str | None = None) -> list[ProviderResultRow]:
    provider = ctx.provider(batch.provider)
    rows = [provider.missing_result(i) for i in items.ids_in_batch(ctx.engine, batch.id)]
    if message:
        rows = [ProviderResultRow(custom_id=r.custom_id, error_message=message,
                                  error_code=r.error_code) for r in rows]
    return rows


def _ingest_validation_failure(ctx: Context, batch: Batch) -> None:
    """The whole batch failed validation. Per-line errors fail exactly those items (permanent);
    the other items go back to the queue without using an attempt, after a back-off when the
    provider's token limit was the cause. A batch-wide error of another kind (e.g. the input
    file vanished) uses an attempt, so a persistent one ends in `failed`, not in a loop."""
    errors = json.loads(batch.batch_errors or "[]")
    by_line = {e["line"]: e for e in errors if isinstance(e.get("line"), int)}
    whole = [e for e in errors if e.get("line") is None]
    other = [e for e in whole if e.get("code") != TOKEN_LIMIT_CODE]
    if not errors:
        # Failed with no reason given: nothing names a culprit, so every item pays an attempt.
        other = whole = [{"code": "batch_failed", "message": "the batch failed at the provider "
                          "with no error given"}]
    now = ctx.now()
    not_before = _backoff(ctx, batch) if other else now
    if len(other) < len(whole):
        not_before = now + backoff_delay(1, None, first=max(ctx.poll_interval, 5.0) * 6)
    whole_text = "; ".join(str(e.get("message")) for e in whole) or "another line was invalid"
    whole_code = whole[0].get("code") if whole else None
    max_attempts = ctx.max_attempts(batch.provider)
    # One transaction: an error's line number names an item by its position in the batch.
    with ctx.write() as conn:
        charged: list[ItemOutcome] = []
        refunded: list[ItemOutcome] = []
        attempts = items.attempts_used(conn, batch.id).items()
        for position, (item_id, sent) in enumerate(attempts, start=1):
            error = by_line.get(position)
            if error is not None:
                decision = Decision(
                    Outcome.FAILED, f"failed validation: {error.get('message')}",
                    error_message=error.get("message"), error_code=error.get("code"))
            elif other:
                decision = Decision(
                    Outcome.FAILED if sent >= max_attempts else Outcome.RETRY,
                    f"batch refused by the provider: {whole_text}",
                    error_message=whole_text, error_code=whole_code)
            else:
                refunded.append(_outcome(item_id, Decision(
                    Outcome.RETRY, f"batch failed validation ({whole_text}); re-queued, "
                    "attempt not used", error_message=whole_text, error_code=whole_code), None,
                    now, refund=True, not_before=not_before))
                continue
            charged.append(_outcome(item_id, decision, None, now, refund=False,
                                    not_before=not_before))
        _store(conn, batch.id, charged, now)
        _store(conn, batch.id, refunded, now)
        counts = _finish(conn, batch, "batch failed validation", now,
                         delete_files=ctx.deletes_files(batch.provider))
    log.info("batch %s: failed validation; %s", batch.id, _summary(counts))


def _close(ctx: Context, batch: Batch, rows: Iterable[ProviderResultRow], reason: str, *,
           not_before: float | None = None, attempts: dict[str, int] | None = None,
           result_files: tuple[str | None, str | None] = (None, None),
           waste: list[ProviderResultRow] | None = None) -> None:
    """Store `rows` for the items still in the batch (`attempts`: each one's sends, read now
    when not given; an item that left the batch since makes its run's write fail and retry)."""
    now = ctx.now()
    max_attempts = ctx.max_attempts(batch.provider)
    # Asked for by someone, or done outside the tracker; not the tracker's own cancel of a
    # batch that answered 404 for too long (its unfinished lines go back to the queue).
    cancelled = bool(batch.cancel_requested) or (
        (batch.status == BatchStatus.CANCELLED
         or (batch.provider_status is not None
             and ctx.provider(batch.provider).cancel_acknowledged(batch.provider_status)))
        and not batch.requeue_unfinished)
    if attempts is None:
        with read(ctx.engine) as conn:
            attempts = items.attempts_used(conn, batch.id)

    def outcomes() -> Iterator[tuple[str, Decision, ProviderResultRow | None]]:
        for row in rows:
            sent = attempts.pop(row.custom_id, None)
            if sent is None:
                continue  # not (or no longer) an item of this batch
            if batch.requeue_unfinished and not cancelled and is_unfinished(row):
                yield row.custom_id, Decision(
                    Outcome.RETRY, "the tracker cancelled its batch after 404s; re-queued, "
                    "attempt not used", refund=True), row
                continue
            yield row.custom_id, classify(
                row, sent, max_attempts, batch_cancelled=cancelled,
                cancelled_by_tracker=bool(batch.cancel_requested)), row

    # Runs of neighbouring ids, at least two when there are two items (a crash between them
    # is one of the crash points).
    ranks = {item_id: rank for rank, item_id in enumerate(attempts)}
    spool: OutcomeSpool[ItemOutcome] = OutcomeSpool(
        results_directory(ctx, batch.id), ranks, min(OUTCOME_CHUNK, -(-len(ranks) // 2)))
    try:
        for item_id, decision, row in outcomes():
            spool.add(item_id, _outcome(item_id, decision, row, now, refund=decision.refund,
                                        not_before=not_before))
        stored = 0
        for run in spool.runs():
            with ctx.write() as conn:
                _store(conn, batch.id, run, now)
            if stored < len(ranks) / 2 <= stored + len(run):
                crash_point("mid_ingest")
            stored += len(run)
    finally:
        spool.close()
    with ctx.write() as conn:
        totals = _finish(conn, batch, reason, now,
                         delete_files=ctx.deletes_files(batch.provider),
                         result_files=result_files)
        if waste:
            ledger.record_waste(conn, batch, waste, batch.ended_at or now)
    shutil.rmtree(results_directory(ctx, batch.id), ignore_errors=True)
    crash_point("after_ingest")
    log.info("batch %s (%s): ingested; %s", batch.id, batch.provider_batch_id, _summary(totals))


#: Item outcomes written per transaction: neighbouring ids (`OutcomeSpool`), in id order, so
#: each transaction writes one stretch of the items table (and of the history's index) once.
#: Memory stays flat in the size of the batch. A shuffled 50,000-line file on SQLite: 3.2 s in
#: file order in one transaction, 3.5 s in ten transactions of 5,000 in file order, 2.0 to
#: 2.5 s in ten runs of neighbouring ids.
OUTCOME_CHUNK = 5000


def _store(conn: Connection, batch_id: str, outcomes: list[ItemOutcome], now: float) -> None:
    """Write `outcomes`, in item id order, and add them to the batch's counts."""
    outcomes.sort(key=_item_id)
    record_item_outcomes(conn, outcomes, now)
    counts = Counter(str(outcome.status) for outcome in outcomes)
    batches.add_ingest_counts(conn, batch_id, *(counts[o.value] for o in _SUMMARY))


def _item_id(outcome: ItemOutcome) -> str:
    return outcome.item_id


def _outcome(item_id: str, decision: Decision, row: ProviderResultRow | None, now: float, *,
             refund: bool, not_before: float | None) -> ItemOutcome:
    retry = decision.outcome is Outcome.RETRY
    result = row if decision.outcome is Outcome.SUCCEEDED else None
    return ItemOutcome(
        item_id=item_id,
        status=ItemStatus(decision.outcome.value),
        reason=decision.reason,
        error_message=decision.error_message,
        error_code=decision.error_code,
        error_status=decision.error_status,
        output_text=result.output_text if result else None,
        output_data=_output_data(result),
        prompt_tokens=result.prompt_tokens if result else None,
        completion_tokens=result.completion_tokens if result else None,
        total_tokens=result.total_tokens if result else None,
        cached_tokens=result.cached_tokens if result else None,
        reasoning_tokens=result.reasoning_tokens if result else None,
        finished_at=None if retry else now,
        not_before=(not_before if not_before is not None else now) if retry else None,
        refund=retry and refund,
    )


def _output_data(result: ProviderResultRow | None) -> str | None:
    """What the provider returned for the item: its result line as it came when the provider
    kept it (no re-serialized copy), else its output data as JSON."""
    if result is None:
        return None
    if result.raw_line is not None:
        return result.raw_line
    return json.dumps(result.output_data) if result.output_data is not None else None


#: The outcomes in the order of the batch's counts columns.
_SUMMARY = (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.RETRY, Outcome.CANCELLED)


def _finish(conn: Connection, batch: Batch, reason: str, now: float, *,
            delete_files: bool,
            result_files: tuple[str | None, str | None] = (None, None)) -> Counter[str]:
    """Close the batch; returns its counts (every run's, from this ingest and earlier ones).
    Refused while an item is still in it: a batch is never closed over an item not stored.
    With `delete_files`, its files at the provider are put up for deletion."""
    left = items.count_in_batch(conn, batch.id)
    if left:
        raise StaleBatch(f"{left} items of batch {batch.id} are still in it after its results "
                         "were stored; it is closed at a later ingest")
    totals = Counter(dict(zip((o.value for o in _SUMMARY),
                              batches.ingest_counts(conn, batch.id), strict=True)))
    move_batch(conn, batch.id, batch.status, BatchStatus.INGESTED,
               f"{reason}; {_summary(totals)}", now, ingested_at=now, next_action_at=None,
               cancel_requested=0)
    ledger.record_batch_results(conn, batch.id, batch.ended_at or now)
    spend.recheck_waiting(conn, now)  # its hold is released: a waiting batch may fit now
    if delete_files:
        file_deletions.schedule_batch_files(conn, batch.id, now, result_files)
    return totals


def _summary(counts: Counter[str]) -> str:
    return (f"{counts[Outcome.SUCCEEDED.value]} succeeded, {counts[Outcome.FAILED.value]} failed, "
            f"{counts[Outcome.RETRY.value]} re-queued, {counts[Outcome.CANCELLED.value]} "
            "cancelled")
