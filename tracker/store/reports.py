"""Read models behind `tracker status` and `tracker results`, and the daemon's idle check.

`workers` and `batches` load the SQLModel tables, so they are imported by the functions that
use them: `tracker results` starts without them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, text

from tracker.states import OPEN_BATCH, BatchStatus, ItemStatus
from tracker.store import provider_state
from tracker.store.dialect import enqueue_order
from tracker.store.engine import read

RESULT_FIELDS = (
    "id", "status", "output_text", "error_message", "error_code", "attempts",
    "provider_batch_id", "model", "provider", "prompt_tokens", "completion_tokens",
    "total_tokens",
)
_OPEN = {"statuses": sorted(str(s) for s in OPEN_BATCH)}
#: Items a worker still has to do something about.
_UNFINISHED_ITEMS = {"statuses": [str(ItemStatus.QUEUED), str(ItemStatus.IN_BATCH)]}


def status_report(engine: Engine, now: float) -> dict[str, Any]:
    from tracker.store import workers
    from tracker.store.batches import STATUSES

    with read(engine) as conn:
        items: dict[str, int] = {str(k): int(v) for k, v in conn.execute(text(
            "SELECT status, count(*) FROM items GROUP BY status")).all()}
        batches: dict[str, int] = {str(k): int(v) for k, v in conn.execute(text(
            "SELECT status, count(*) FROM batches GROUP BY status")).all()}
        oldest = conn.execute(text(
            "SELECT min(created_at) FROM batches WHERE status IN :statuses")
            .bindparams(STATUSES), _OPEN).scalar()
        paused = provider_state.paused(conn)
        errors = [dict(r._mapping) for r in conn.execute(text(
            "SELECT id, provider_batch_id, status, last_error, next_action_at FROM batches "
            "WHERE status IN :statuses AND last_error IS NOT NULL ORDER BY updated_at DESC "
            "LIMIT 10").bindparams(STATUSES), _OPEN)]
        daemon = conn.execute(text(
            "SELECT host, pid, heartbeat_at, expires_at FROM daemon_lease")).one_or_none()
        live = workers.live_workers(conn, now)
    for error in errors:
        next_at = error.pop("next_action_at")
        error["next_try_in_seconds"] = None if next_at is None else round(
            max(next_at - now, 0.0), 1)
    return {
        "items": {s.value: items.get(s.value, 0) for s in ItemStatus},
        "batches": {s.value: batches.get(s.value, 0) for s in BatchStatus},
        "oldest_open_batch_age_seconds": None if oldest is None else round(now - oldest, 1),
        "paused_providers": paused,
        "batch_errors": errors,
        "daemon": None if daemon is None or daemon.expires_at < now else {
            "host": daemon.host, "pid": daemon.pid,
            "heartbeat_age_seconds": round(now - daemon.heartbeat_at, 1)},
        "workers": live,
    }


def iter_results(engine: Engine, status: ItemStatus | None = None) -> Iterator[dict[str, Any]]:
    """One record per item, in enqueue order; `provider_batch_id` is of the batch its
    outcome came from (the last batch it was in)."""
    where = "WHERE i.status = :status" if status else ""
    with read(engine) as conn:
        result = conn.execution_options(stream_results=True).execute(text(
            "SELECT i.id, i.status, i.output_text, i.error_message, i.error_code, i.attempts, "
            "b.provider_batch_id, i.model, i.provider, i.prompt_tokens, i.completion_tokens, "
            f"i.total_tokens FROM items i LEFT JOIN batches b ON b.id = i.batch_id {where} "
            f"ORDER BY {enqueue_order(conn, 'i')}"),
            {"status": None if status is None else str(status)})
        for row in result:
            yield dict(row._mapping)


def is_idle(engine: Engine) -> bool:
    """No item waiting or in flight, and no batch open (for any worker)."""
    from tracker.store.batches import STATUSES

    with read(engine) as conn:
        busy = conn.execute(text(
            "SELECT EXISTS (SELECT 1 FROM items WHERE status IN :statuses)")
            .bindparams(STATUSES), _UNFINISHED_ITEMS).scalar()
        busy = busy or conn.execute(text(
            "SELECT EXISTS (SELECT 1 FROM batches WHERE status IN :statuses)")
            .bindparams(STATUSES), _OPEN).scalar()
    return not busy
