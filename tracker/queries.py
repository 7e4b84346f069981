"""Read models and operator actions behind `status`, `results`, `cancel` and `retry`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, text

from tracker import states
from tracker.context import Context, log
from tracker.errors import InputError
from tracker.providers.base import ProviderError
from tracker.store import workers
from tracker.store.dialect import enqueue_order
from tracker.store.engine import read, write

RESULT_FIELDS = (
    "id", "status", "output_text", "error_message", "error_code", "attempts",
    "provider_batch_id", "model", "provider", "prompt_tokens", "completion_tokens",
    "total_tokens",
)


def status_report(engine: Engine, now: float) -> dict[str, Any]:
    with read(engine) as conn:
        items: dict[str, int] = dict(conn.execute(text(
            "SELECT status, count(*) FROM items GROUP BY status")).all())
        batches: dict[str, int] = dict(conn.execute(text(
            "SELECT status, count(*) FROM batches GROUP BY status")).all())
        oldest = conn.execute(text(
            "SELECT min(created_at) FROM batches WHERE status <> 'ingested'")).scalar()
        paused = [dict(r._mapping) for r in conn.execute(text(
            "SELECT provider, paused_reason AS reason, paused_at, next_probe_at "
            "FROM provider_state WHERE paused_reason IS NOT NULL"))]
        errors = [dict(r._mapping) for r in conn.execute(text(
            "SELECT id, provider_batch_id, status, last_error, next_action_at FROM batches "
            "WHERE status <> 'ingested' AND last_error IS NOT NULL ORDER BY updated_at DESC "
            "LIMIT 10"))]
        daemon = conn.execute(text(
            "SELECT host, pid, heartbeat_at, expires_at FROM daemon_lease")).one_or_none()
        live = workers.live_workers(conn, now)
    for error in errors:
        next_at = error.pop("next_action_at")
        error["next_try_in_seconds"] = None if next_at is None else round(
            max(next_at - now, 0.0), 1)
    return {
        "items": {s.value: items.get(s.value, 0) for s in states.ItemStatus},
        "batches": {s.value: batches.get(s.value, 0) for s in states.BatchStatus},
        "oldest_open_batch_age_seconds": None if oldest is None else round(now - oldest, 1),
        "paused_providers": paused,
        "batch_errors": errors,
        "daemon": None if daemon is None or daemon.expires_at < now else {
            "host": daemon.host, "pid": daemon.pid,
            "heartbeat_age_seconds": round(now - daemon.heartbeat_at, 1)},
        "workers": live,
    }


def iter_results(engine: Engine, status: str | None = None) -> Iterator[dict[str, Any]]:
    """One record per item, in enqueue order; `provider_batch_id` is of the batch its
    outcome came from (the last batch it was in)."""
    where = "WHERE i.status = :status" if status else ""
    with read(engine) as conn:
        result = conn.execution_options(stream_results=True).execute(text(
            "SELECT i.id, i.status, i.output_text, i.error_message, i.error_code, i.attempts, "
            "b.provider_batch_id, i.model, i.provider, i.prompt_tokens, i.completion_tokens, "
            f"i.total_tokens FROM items i LEFT JOIN batches b ON b.id = i.batch_id {where} "
            f"ORDER BY {enqueue_order(conn, 'i')}"), {"status": status})
        for row in result:
            yield dict(row._mapping)


def request_cancel(ctx: Context, provider_batch_id: str | None, all_open: bool) -> list[str]:
    """Record the wish to cancel (intent first), then ask the provider. Returns the local ids.
    The daemon finishes the job: it ingests partial output and cancels the rest."""
    now = ctx.now()
    with write(ctx.engine) as conn:
        if all_open:
            rows = conn.execute(text(
                "SELECT id, provider, provider_batch_id, status FROM batches WHERE status IN "
                "('pending', 'submitted', 'in_progress')")).all()
        else:
            rows = conn.execute(text(
                "SELECT id, provider, provider_batch_id, status FROM batches "
                "WHERE provider_batch_id = :p OR id = :p"), {"p": provider_batch_id}).all()
            if not rows:
                raise InputError(f"no batch {provider_batch_id!r} in this database")
            if rows[0].status not in ("pending", "submitted", "in_progress"):
                raise InputError(f"batch {provider_batch_id} has already ended "
                                 f"({rows[0].status}); nothing to cancel")
        for row in rows:
            conn.execute(text(
                "UPDATE batches SET cancel_requested = 1, next_action_at = :now, "
                "updated_at = :now WHERE id = :id"), {"now": now, "id": row.id})
    for row in rows:
        if row.provider_batch_id is None:
            continue
        try:
            ctx.provider(row.provider).cancel(row.provider_batch_id)
        except ProviderError as exc:
            log.warning("batch %s: cancel will be retried by the daemon: %s", row.id,
                        exc.message)
    return [row.id for row in rows]


def retry_items(engine: Engine, now: float, *, failed: bool, cancelled: bool) -> int:
    """Send failed and/or cancelled items again, with a fresh set of attempts (`attempts`
    keeps counting every send; the earlier ones become `free_attempts`)."""
    sources = [s for s, wanted in (("failed", failed), ("cancelled", cancelled)) if wanted]
    moved = 0
    with write(engine) as conn:
        for source in sources:
            ids = list(conn.execute(text("SELECT id FROM items WHERE status = :s"),
                                    {"s": source}).scalars())
            states.transition_many(conn, "item", ids, source, "queued",
                                   f"tracker retry --{source}", now,
                                   {"free_attempts": "attempts"}, not_before=0.0,
                                   finished_at=None)
            moved += len(ids)
    return moved


def dumps_record(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)
