"""The daemon's steps: pack, submit (with reconcile), poll. Ingest lives in `ingest.py`.

Each step is idempotent and safe to re-run after a crash at any line: it commits its intent,
makes the network call with no transaction open, then commits the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, text

from tracker import states
from tracker.context import Context, log, new_batch_id
from tracker.crashpoints import crash_point
from tracker.db import read, write
from tracker.providers.base import (
    BaseBatchProvider,
    BatchStatus,
    PermanentProviderError,
    PreparedBatch,
    ProviderError,
    TransientProviderError,
)
from tracker.providers.openai import MAX_BYTES_PER_BATCH, MAX_LINES_PER_BATCH
from tracker.retry import backoff_delay, poll_delay

METADATA_KEY = "tracker_batch_id"
#: Bytes a JSONL line adds around the payload (custom_id, method, url, model).
LINE_OVERHEAD = 200
#: Reconcile looks at provider batches created this long before the create attempt.
RECONCILE_SLACK = 600
#: Errors that stop all submissions to a provider until a probe succeeds.
PAUSING_CODES = frozenset({"insufficient_quota", "invalid_api_key", "missing_api_key"})
PAUSING_STATUSES = frozenset({401, 403})
PROBE_INTERVAL = 60.0
#: OpenAI: "You can create up to 2,000 batches per hour."
BATCHES_PER_HOUR = 2000


# -- pack ------------------------------------------------------------------------------------


def pack(ctx: Context) -> int:
    """Group queued items by provider and model into new `pending` batches. Returns how many."""
    made = 0
    for provider_name, section in ctx.config.providers.items():
        if not section.enabled or ctx.paused_reason(provider_name):
            continue
        for model in section.models:
            while made < ctx.batches_per_step and _pack_one(
                ctx, provider_name, model.name, model.max_prompts_per_batch,
                model.max_enqueued_tokens,
            ):
                made += 1
    return made


def _room(conn: Connection, provider: str, model: str, now: float,
          token_cap: int | None) -> tuple[bool, int | None, bool]:
    """Whether another batch may be made now, how many more tokens it may carry, and whether
    nothing is in flight (then one batch may go even if its first item alone is over the cap,
    or that item could never be sent)."""
    made_last_hour = conn.execute(
        text("SELECT count(*) FROM batches WHERE provider = :p AND created_at > :since "
             "AND duplicate_of IS NULL"),
        {"p": provider, "since": now - 3600},
    ).scalar_one()
    if made_last_hour >= BATCHES_PER_HOUR:
        return False, None, False
    if token_cap is None:
        return True, None, False
    in_flight = conn.execute(
        text("SELECT COALESCE(sum(est_tokens), 0) FROM batches WHERE provider = :p AND "
             "model = :m AND status IN ('pending', 'submitted', 'in_progress')"),
        {"p": provider, "m": model},
    ).scalar_one()
    return in_flight < token_cap, token_cap - in_flight, in_flight == 0


def _pack_one(ctx: Context, provider: str, model: str, limit: int,
              token_cap: int | None = None) -> bool:
    now = ctx.now()
    limit = min(limit, MAX_LINES_PER_BATCH)
    with write(ctx.engine) as conn:
        allowed, token_room, alone = _room(conn, provider, model, now, token_cap)
        if not allowed:
            return False
        rows = conn.execute(
            text(
                "SELECT id, length(payload) AS size, est_tokens FROM items "
                "WHERE status = 'queued' AND provider = :p AND model = :m AND not_before <= :now "
                "ORDER BY rowid LIMIT :n"
            ),
            {"p": provider, "m": model, "now": now, "n": limit},
        ).all()
        if not rows:
            return False
        ids: list[str] = []
        size = tokens = 0
        for row in rows:
            line = row.size + len(row.id) + len(model) + LINE_OVERHEAD
            if ids and size + line > MAX_BYTES_PER_BATCH:
                break
            if (token_room is not None and tokens + row.est_tokens > token_room
                    and (ids or not alone)):
                break
            ids.append(row.id)
            size += line
            tokens += row.est_tokens
        if not ids:
            return False
        batch_id = new_batch_id()
        conn.execute(
            text(
                "INSERT INTO batches (id, provider, model, endpoint, status, status_reason, "
                "item_count, est_tokens, next_action_at, created_at, updated_at) "
                "VALUES (:id, :p, :m, :endpoint, 'pending', :reason, :n, :tokens, :now, :now, "
                ":now)"
            ),
            {"id": batch_id, "p": provider, "m": model, "endpoint": _endpoint(ctx, provider, model),
             "reason": f"packed {len(ids)} items", "n": len(ids), "tokens": tokens, "now": now},
        )
        states.transition_many(
            conn, "item", ids, "queued", "in_batch", f"packed into batch {batch_id}", now,
            exprs={"attempts": "attempts + 1"}, batch_id=batch_id,
        )
    log.info("batch %s: packed %d items for %s/%s", batch_id, len(ids), provider, model)
    crash_point("after_pack")
    return True


def _endpoint(ctx: Context, provider: str, model: str) -> str:
    from tracker.providers.openai import ENDPOINTS

    return ENDPOINTS.get(ctx.mode(provider, model), "/v1/chat/completions")


# -- submit ----------------------------------------------------------------------------------


def submit(ctx: Context) -> int:
    """Upload and create every due `pending` batch; reconcile first where a create may have
    reached the provider. Returns how many batches were handled."""
    now = ctx.now()
    with read(ctx.engine) as conn:
        batches = conn.execute(
            text("SELECT * FROM batches WHERE status = 'pending' AND "
                 "(next_action_at IS NULL OR next_action_at <= :now) "
                 "ORDER BY created_at LIMIT :n"),
            {"now": now, "n": ctx.batches_per_step},
        ).all()
    handled = 0
    for batch in batches:
        if ctx.paused_reason(batch.provider) and not batch.cancel_requested:
            continue
        try:
            _submit_one(ctx, batch)
        except TransientProviderError as exc:
            record_failure(ctx, batch.id, exc)
        except PermanentProviderError as exc:
            _submit_refused(ctx, batch, exc)
        else:
            ctx.resume_provider(batch.provider)
        handled += 1
    return handled


def _submit_one(ctx: Context, batch: Any) -> None:
    provider = ctx.provider(batch.provider)
    if batch.create_attempted_at is not None:
        found = provider.find_batches_by_metadata(
            METADATA_KEY, batch.id,
            created_after=int(batch.create_attempted_at) - RECONCILE_SLACK,
        )
        if found:
            adopt(ctx, batch, found)
            return
    if batch.cancel_requested:
        _finish_cancelled_pending(ctx, batch)
        return
    input_file_id = batch.input_file_id
    if input_file_id is None:
        prepared = build_input(ctx, batch, provider)
        try:
            input_file_id = provider.upload_input(prepared)
        finally:
            prepared.jsonl_path.unlink(missing_ok=True)
        with write(ctx.engine) as conn:
            conn.execute(
                text("UPDATE batches SET input_file_id = :f, updated_at = :now "
                     "WHERE id = :id AND status = 'pending'"),
                {"f": input_file_id, "now": ctx.now(), "id": batch.id},
            )
        crash_point("after_upload")
    with write(ctx.engine) as conn:
        conn.execute(
            text("UPDATE batches SET create_attempted_at = :now, updated_at = :now, "
                 "create_attempts = create_attempts + 1 WHERE id = :id AND status = 'pending'"),
            {"now": ctx.now(), "id": batch.id},
        )
    status = provider.create_batch(input_file_id, batch.endpoint, {METADATA_KEY: batch.id})
    crash_point("after_create")
    _record_created(ctx, batch.id, status, reason=f"created {status.provider_batch_id}")
    log.info("batch %s: submitted as %s (%d items)", batch.id, status.provider_batch_id,
             batch.item_count)


def build_input(ctx: Context, batch: Any, provider: BaseBatchProvider) -> PreparedBatch:
    """The batch's JSONL, built from the database in id order (the line order ingest relies
    on to map 1-based validation-error lines back to items)."""
    with read(ctx.engine) as conn:
        items = _stream_items(conn, batch.id)
        return provider.prepare_payloads(
            items, batch.model, ctx.mode(batch.provider, batch.model),
            metadata={METADATA_KEY: batch.id}, directory=ctx.work_dir,
        )


def _stream_items(conn: Connection, batch_id: str) -> Iterator[dict[str, Any]]:
    result = conn.execution_options(stream_results=True).execute(
        text("SELECT id, payload FROM items WHERE batch_id = :b AND status = 'in_batch' "
             "ORDER BY id"),
        {"b": batch_id},
    )
    for row in result:
        yield {"id": row.id, "input_payload": json.loads(row.payload)}


def batch_item_ids(ctx: Context, batch_id: str) -> list[str]:
    """The ids of the items still in the batch, in input-file (id) order."""
    with read(ctx.engine) as conn:
        return list(conn.execute(
            text("SELECT id FROM items WHERE batch_id = :b AND status = 'in_batch' ORDER BY id"),
            {"b": batch_id},
        ).scalars())


def _record_created(ctx: Context, batch_id: str, status: BatchStatus, reason: str) -> None:
    now = ctx.now()
    with write(ctx.engine) as conn:
        current = conn.execute(
            text("SELECT status FROM batches WHERE id = :id"), {"id": batch_id}
        ).scalar_one()
        if current != "pending":
            return  # recorded already (a repeated step)
        _store_status(conn, batch_id, status, now, ctx.poll_interval)
        states.transition(
            conn, "batch", batch_id, "pending", str(status.normalized_status), reason, now,
            provider_batch_id=status.provider_batch_id, submitted_at=now, failures=0,
            last_error=None,
        )


def adopt(ctx: Context, batch: Any, found: list[BatchStatus]) -> None:
    """A create reached the provider though its answer was lost: keep one provider batch and
    cancel any others that carry the same local id."""
    ranked = sorted(found, key=lambda s: (s.provider_status in ("failed", "cancelled",
                                                                 "cancelling", "expired"),
                                          s.created_at or 0, s.provider_batch_id))
    keep, extras = ranked[0], ranked[1:]
    record_duplicates(ctx, batch, keep.provider_batch_id, extras)
    reason = f"adopted {keep.provider_batch_id} by reconcile (create answer was lost)"
    if extras:
        reason += f"; {len(extras)} duplicate(s) cancelled"
    _record_created(ctx, batch.id, keep, reason=reason)
    log.warning("batch %s: %s", batch.id, reason)


def sweep_duplicates(ctx: Context, batch: Any) -> None:
    """After more than one create attempt, look once more for provider batches carrying this
    local id (one may have appeared after reconcile looked) and cancel all but the kept one."""
    found = ctx.provider(batch.provider).find_batches_by_metadata(
        METADATA_KEY, batch.id, created_after=int(batch.created_at) - RECONCILE_SLACK)
    extras = [s for s in found if s.provider_batch_id != batch.provider_batch_id]
    if record_duplicates(ctx, batch, batch.provider_batch_id, extras):
        log.warning("batch %s: found %d duplicate provider batch(es); cancelling them",
                    batch.id, len(extras))


def record_duplicates(ctx: Context, batch: Any, kept: str, extras: list[BatchStatus]) -> int:
    """Insert a `duplicate_of` row for each unknown extra provider batch, with a cancel
    requested: the poll step cancels it and ingest discards its results. Returns how many."""
    now = ctx.now()
    added = 0
    with write(ctx.engine) as conn:
        known = set(conn.execute(
            text("SELECT provider_batch_id FROM batches WHERE provider_batch_id IS NOT NULL "
                 "AND (id = :id OR duplicate_of = :id)"), {"id": batch.id}).scalars())
        for extra in extras:
            if extra.provider_batch_id in known:
                continue
            conn.execute(
                text(
                    "INSERT INTO batches (id, provider, model, endpoint, status, status_reason, "
                    "provider_batch_id, provider_status, item_count, cancel_requested, "
                    "duplicate_of, next_action_at, created_at, updated_at) VALUES (:id, :p, :m, "
                    ":e, :status, :reason, :pbid, :ps, 0, 1, :dup, :now, :now, :now)"
                ),
                {"id": new_batch_id(), "p": batch.provider, "m": batch.model,
                 "e": batch.endpoint, "status": _open_status(extra), "pbid":
                 extra.provider_batch_id, "ps": extra.provider_status, "dup": batch.id,
                 "now": now, "reason": f"duplicate provider batch for {batch.id} "
                 f"(kept {kept}); cancelling it, its results are discarded"},
            )
            added += 1
    return added


def _open_status(status: BatchStatus) -> str:
    normalized = str(status.normalized_status)
    return "in_progress" if normalized == "submitted" else normalized


def _finish_cancelled_pending(ctx: Context, batch: Any) -> None:
    with write(ctx.engine) as conn:
        states.transition(conn, "batch", batch.id, "pending", "cancelled",
                          "cancelled before it reached the provider", ctx.now(),
                          ended_at=ctx.now(), next_action_at=ctx.now())


def _submit_refused(ctx: Context, batch: Any, exc: PermanentProviderError) -> None:
    if _pausing(exc):
        refused(ctx, batch, exc)  # the batch waits, pending, for the provider to come back
        return
    now = ctx.now()
    with write(ctx.engine) as conn:
        states.transition(conn, "batch", batch.id, "pending", "failed",
                          f"refused by the provider: {exc.message}", now,
                          last_error=exc.message, ended_at=now, next_action_at=now)
    log.error("batch %s: refused by the provider: %s", batch.id, exc.message)


def record_failure(ctx: Context, batch_id: str, exc: ProviderError,
                   delay: float | None = None) -> None:
    """A call about this batch failed: keep the error, try again after a back-off."""
    now = ctx.now()
    with write(ctx.engine) as conn:
        failures = conn.execute(
            text("UPDATE batches SET failures = failures + 1 WHERE id = :id RETURNING failures"),
            {"id": batch_id},
        ).scalar_one()
        hint = exc.retry_after if isinstance(exc, TransientProviderError) else None
        wait = delay if delay is not None else backoff_delay(
            failures, hint, first=min(ctx.poll_interval, 1.0),
            cap=max(ctx.poll_interval * 10, 60.0))
        conn.execute(
            text("UPDATE batches SET last_error = :e, next_action_at = :t, updated_at = :now "
                 "WHERE id = :id"),
            {"e": exc.message, "t": now + wait, "now": now, "id": batch_id},
        )
    log.warning("batch %s: %s (try %d, next in %.1fs)", batch_id, exc.message, failures, wait)


# -- poll ------------------------------------------------------------------------------------


def poll(ctx: Context) -> int:
    """Read the status of every running batch that is due; send cancels that were asked for."""
    now = ctx.now()
    with read(ctx.engine) as conn:
        batches = conn.execute(
            text("SELECT * FROM batches WHERE status IN ('submitted', 'in_progress') AND "
                 "(next_action_at IS NULL OR next_action_at <= :now) "
                 "ORDER BY next_action_at LIMIT :n"),
            {"now": now, "n": ctx.batches_per_step},
        ).all()
    for batch in batches:
        provider = ctx.provider(batch.provider)
        try:
            if batch.cancel_requested:
                status = provider.cancel(batch.provider_batch_id)
            else:
                status = provider.poll_status(batch.provider_batch_id)
        except TransientProviderError as exc:
            record_failure(ctx, batch.id, exc)
            continue
        except PermanentProviderError as exc:
            _poll_refused(ctx, batch, exc)
            continue
        record_status(ctx, batch, status)
    return len(batches)


def record_status(ctx: Context, batch: Any, status: BatchStatus) -> None:
    now = ctx.now()
    target = str(status.normalized_status)
    with write(ctx.engine) as conn:
        current = conn.execute(
            text("SELECT status FROM batches WHERE id = :id"), {"id": batch.id}
        ).scalar_one()
        _store_status(conn, batch.id, status, now, ctx.poll_interval)
        if target != current and target in states.BATCH_MOVES[states.BatchStatus(current)]:
            extra: dict[str, Any] = {}
            if status.is_terminal:
                extra = {"ended_at": now, "next_action_at": now}
            states.transition(conn, "batch", batch.id, current, target,
                              f"provider status {status.provider_status}", now, **extra)
            log.info("batch %s (%s): %s -> %s (provider: %s, %d/%d done, %d failed)",
                     batch.id, status.provider_batch_id, current, target,
                     status.provider_status, status.request_counts.completed,
                     status.request_counts.total, status.request_counts.failed)


def _store_status(conn: Connection, batch_id: str, status: BatchStatus, now: float,
                  poll_interval: float) -> None:
    errors = [e.__dict__ for e in status.errors]
    created = conn.execute(text("SELECT created_at FROM batches WHERE id = :id"),
                           {"id": batch_id}).scalar_one()
    conn.execute(
        text(
            "UPDATE batches SET provider_status = :ps, request_total = :t, "
            "request_completed = :c, request_failed = :f, "
            "input_file_id = COALESCE(input_file_id, :inp), "
            "output_file_id = :out, error_file_id = :err, batch_errors = :errors, "
            "failures = 0, last_error = :warning, next_action_at = :next, updated_at = :now "
            "WHERE id = :id"
        ),
        {"ps": status.provider_status, "t": status.request_counts.total,
         "c": status.request_counts.completed, "f": status.request_counts.failed,
         "inp": status.input_file_id, "out": status.output_file_id,
         "err": status.error_file_id, "errors": json.dumps(errors) if errors else None,
         "next": now + poll_delay(poll_interval, now - created), "now": now, "id": batch_id,
         "warning": None if status.known_status else
         f"unknown provider status {status.provider_status!r}; treated as in_progress"},
    )


def _poll_refused(ctx: Context, batch: Any, exc: PermanentProviderError) -> None:
    if exc.status_code == 404:
        now = ctx.now()
        with write(ctx.engine) as conn:
            states.transition(
                conn, "batch", batch.id, batch.status, "failed",
                f"vanished at the provider (404): {exc.message}", now,
                last_error=f"vanished at the provider: {exc.message}", ended_at=now,
                next_action_at=now,
            )
        log.error("batch %s (%s): vanished at the provider; its items will be re-queued",
                  batch.id, batch.provider_batch_id)
        return
    refused(ctx, batch, exc)


def refused(ctx: Context, batch: Any, exc: PermanentProviderError) -> None:
    """A call about a running or ended batch was refused (bad key, no quota, bad request):
    pause submissions if the provider's answer says so, and ask again after a while."""
    if _pausing(exc):
        ctx.pause_provider(batch.provider, exc.message, PROBE_INTERVAL)
    record_failure(ctx, batch.id, exc, delay=max(PROBE_INTERVAL, ctx.poll_interval))


def _pausing(exc: PermanentProviderError) -> bool:
    """A bad key or no quota: every call would fail alike until someone fixes the account."""
    return exc.code in PAUSING_CODES or exc.status_code in PAUSING_STATUSES
