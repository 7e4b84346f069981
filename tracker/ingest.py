"""Ingest: store the outcome of every item of an ended batch, then close the batch.

Downloads happen with no transaction open; then one transaction moves each item still
`in_batch` in this batch to its outcome and the batch to `ingested`. A second run finds no item
left `in_batch` and changes nothing, so a crash anywhere is repaired by running it again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, text

from tracker import states
from tracker.context import Context, log
from tracker.crashpoints import crash_point
from tracker.db import read, write
from tracker.providers.base import (
    PermanentProviderError,
    ProviderResultRow,
    TransientProviderError,
)
from tracker.providers.openai_results import missing_result_row
from tracker.retry import Decision, Outcome, backoff_delay, classify
from tracker.steps import batch_item_ids, record_failure, refused, sweep_duplicates

TOKEN_LIMIT_CODE = "token_limit_exceeded"


def ingest(ctx: Context) -> int:
    """Ingest every ended batch that is due. Returns how many were closed."""
    now = ctx.now()
    with read(ctx.engine) as conn:
        batches = conn.execute(
            text("SELECT * FROM batches WHERE status IN ('completed', 'failed', 'cancelled') "
                 "AND (next_action_at IS NULL OR next_action_at <= :now) "
                 "ORDER BY next_action_at LIMIT :n"),
            {"now": now, "n": ctx.batches_per_step},
        ).all()
    closed = 0
    for batch in batches:
        try:
            ingest_batch(ctx, batch)
            closed += 1
        except TransientProviderError as exc:
            record_failure(ctx, batch.id, exc)
        except PermanentProviderError as exc:
            if exc.status_code != 404:
                # A bad key or no quota: the results are still there; try again later.
                refused(ctx, batch, exc)
                continue
            # The batch or its files are gone: nothing can be stored from them, so the items
            # are treated as missing from both files (re-queued, or failed when out of
            # attempts) rather than left in limbo.
            log.error("batch %s: results cannot be downloaded: %s", batch.id, exc.message)
            _close(ctx, batch, _missing_rows(ctx, batch), f"results lost: {exc.message}")
            closed += 1
    return closed


def ingest_batch(ctx: Context, batch: Any) -> None:
    if batch.duplicate_of is not None or batch.item_count == 0:
        _close(ctx, batch, [], "duplicate provider batch: results discarded")
        return
    if batch.provider_batch_id is None:
        rows = _missing_rows(ctx, batch, message=batch.last_error or "never submitted")
        _close(ctx, batch, rows, "never reached the provider")
        return
    if batch.provider_status == "failed" and not (batch.output_file_id or batch.error_file_id):
        _ingest_validation_failure(ctx, batch)
        return
    if batch.create_attempts > 1:
        sweep_duplicates(ctx, batch)
    ids = batch_item_ids(ctx, batch.id)
    provider = ctx.provider(batch.provider)
    with provider.fetch_results(batch.provider_batch_id, expected_custom_ids=ids) as results:
        _close(ctx, batch, results, f"results stored (provider status {batch.provider_status})")


def _missing_rows(ctx: Context, batch: Any, message: str | None = None) -> list[ProviderResultRow]:
    rows = [missing_result_row(i) for i in batch_item_ids(ctx, batch.id)]
    if message:
        rows = [ProviderResultRow(custom_id=r.custom_id, error_message=message,
                                  error_code=r.error_code) for r in rows]
    return rows


def _ingest_validation_failure(ctx: Context, batch: Any) -> None:
    """The whole batch failed validation. Per-line errors fail exactly those items (permanent);
    the other items go back to the queue without using an attempt, after a back-off when the
    provider's token limit was the cause. A batch-wide error of another kind (e.g. the input
    file vanished) uses an attempt, so a persistent one ends in `failed`, not in a loop."""
    errors = json.loads(batch.batch_errors or "[]")
    by_line = {e["line"]: e for e in errors if isinstance(e.get("line"), int)}
    whole = [e for e in errors if e.get("line") is None]
    other = [e for e in whole if e.get("code") != TOKEN_LIMIT_CODE]
    now = ctx.now()
    not_before = now
    if len(other) < len(whole):
        not_before = now + backoff_delay(1, None, first=max(ctx.poll_interval, 5.0) * 6)
    whole_text = "; ".join(str(e.get("message")) for e in whole) or "another line was invalid"
    whole_code = whole[0].get("code") if whole else None
    max_attempts = ctx.max_attempts(batch.provider)
    with write(ctx.engine) as conn:
        attempts = conn.execute(
            text("SELECT id, attempts - free_attempts FROM items WHERE batch_id = :b "
                 "AND status = 'in_batch' ORDER BY id"), {"b": batch.id}).all()
        refunded: list[tuple[str, Decision, None]] = []
        charged: list[tuple[str, Decision, None]] = []
        for position, (item_id, sent) in enumerate(attempts, start=1):
            error = by_line.get(position)
            if error is not None:
                charged.append((item_id, Decision(
                    Outcome.FAILED, f"failed validation: {error.get('message')}",
                    error_message=error.get("message"), error_code=error.get("code")), None))
            elif other:
                outcome = Outcome.FAILED if sent >= max_attempts else Outcome.RETRY
                charged.append((item_id, Decision(
                    outcome, f"batch refused by the provider: {whole_text}",
                    error_message=whole_text, error_code=whole_code), None))
            else:
                refunded.append((item_id, Decision(
                    Outcome.RETRY, f"batch failed validation ({whole_text}); re-queued, "
                    "attempt not used", error_message=whole_text, error_code=whole_code), None))
        counts = _apply(conn, batch, charged, now, not_before=not_before)
        counts += _apply(conn, batch, refunded, now, refund=True, not_before=not_before)
        _finish(conn, batch, counts, "batch failed validation", now)
    log.info("batch %s: failed validation; %s", batch.id, _summary(counts))


def _close(ctx: Context, batch: Any, rows: Iterable[ProviderResultRow], reason: str) -> None:
    now = ctx.now()
    max_attempts = ctx.max_attempts(batch.provider)
    cancelled = batch.status == "cancelled" or batch.provider_status in ("cancelled",
                                                                         "cancelling")
    with write(ctx.engine) as conn:
        attempts = dict(conn.execute(
            text("SELECT id, attempts - free_attempts FROM items "
                 "WHERE batch_id = :b AND status = 'in_batch'"), {"b": batch.id}).all())

        def outcomes() -> Iterator[tuple[str, Decision, ProviderResultRow | None]]:
            for row in rows:
                sent = attempts.pop(row.custom_id, None)
                if sent is None:
                    continue  # not (or no longer) an item of this batch
                yield row.custom_id, classify(
                    row, sent, max_attempts, batch_cancelled=cancelled,
                    cancelled_by_tracker=bool(batch.cancel_requested)), row

        counts = _apply(conn, batch, outcomes(), now)
        _finish(conn, batch, counts, reason, now)
    crash_point("after_ingest")
    log.info("batch %s (%s): ingested; %s", batch.id, batch.provider_batch_id, _summary(counts))


def _apply(conn: Connection, batch: Any,
           outcomes: Iterable[tuple[str, Decision, ProviderResultRow | None]], now: float,
           *, refund: bool = False, not_before: float | None = None) -> Counter[str]:
    counts: Counter[str] = Counter()
    halfway = max(batch.item_count // 2, 1)
    for item_id, decision, row in outcomes:
        _apply_one(conn, item_id, decision, row, now, refund=refund, not_before=not_before)
        counts[decision.outcome.value] += 1
        if counts.total() == halfway:
            crash_point("mid_ingest")
    return counts


def _apply_one(conn: Connection, item_id: str, decision: Decision,
               row: ProviderResultRow | None, now: float, *, refund: bool,
               not_before: float | None) -> None:
    fields: dict[str, Any] = {
        "error_message": decision.error_message,
        "error_code": decision.error_code,
        "error_status": decision.error_status,
    }
    exprs: dict[str, str] = {}
    if decision.outcome is Outcome.SUCCEEDED and row is not None:
        usage = (row.output_data or {}).get("usage") or {}
        fields.update(
            output_text=row.output_text,
            output_data=json.dumps(row.output_data) if row.output_data is not None else None,
            prompt_tokens=usage.get("prompt_tokens", usage.get("input_tokens")),
            completion_tokens=usage.get("completion_tokens", usage.get("output_tokens")),
            total_tokens=usage.get("total_tokens"),
        )
    if decision.outcome is Outcome.RETRY:
        fields["not_before"] = not_before if not_before is not None else now
        if refund:
            exprs["free_attempts"] = "free_attempts + 1"
    else:
        fields["finished_at"] = now
    states.transition(conn, "item", item_id, "in_batch", decision.outcome.value,
                      decision.reason, now, exprs, **fields)


def _finish(conn: Connection, batch: Any, counts: Counter[str], reason: str, now: float) -> None:
    states.transition(
        conn, "batch", batch.id, batch.status, "ingested", f"{reason}; {_summary(counts)}", now,
        ingested_at=now,
        succeeded_count=counts[Outcome.SUCCEEDED.value],
        failed_count=counts[Outcome.FAILED.value],
        requeued_count=counts[Outcome.RETRY.value],
        cancelled_count=counts[Outcome.CANCELLED.value],
        next_action_at=None,
    )


def _summary(counts: Counter[str]) -> str:
    return (f"{counts[Outcome.SUCCEEDED.value]} succeeded, {counts[Outcome.FAILED.value]} failed, "
            f"{counts[Outcome.RETRY.value]} re-queued, {counts[Outcome.CANCELLED.value]} "
            "cancelled")
