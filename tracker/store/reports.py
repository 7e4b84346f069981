"""Read models behind `tracker status` and `tracker results`, and the daemon's idle check.

The queries run on a `Reader` (see `tracker.store.reader`), so the commands can answer from an
SQLite file without loading SQLAlchemy; the functions taking an engine are for the daemon and
the tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tracker.pricing import PriceBook, Usage, cost, usd_text
from tracker.states import OPEN_BATCH, BatchStatus, ItemStatus
from tracker.store import progress
from tracker.store.dialect import enqueue_order
from tracker.store.reader import Reader, engine_snapshot
from tracker.store.spend import WAITING_FOR_BUDGET

if TYPE_CHECKING:
    from sqlalchemy import Engine

RESULT_FIELDS = (
    "id", "status", "output_text", "error_message", "error_code", "attempts",
    "provider_batch_id", "model", "provider", "prompt_tokens", "completion_tokens",
    "total_tokens", "job", "metadata", "cached_tokens", "reasoning_tokens", "cost_usd",
)


def _in(statuses: Iterable[StrEnum]) -> str:
    """An SQL list of status names (the tracker's own constants, so written inline)."""
    return "(" + ", ".join(sorted(f"'{status.value}'" for status in statuses)) + ")"


_OPEN = _in(OPEN_BATCH)


def status_of(reader: Reader, now: float, job: str | None = None, *,
              prices: PriceBook | None = None,
              budget_limit: Decimal | None = None) -> dict[str, Any]:
    """The whole picture; with `job`, the items of that job and the batches holding them.
    With `prices`: spend, projection and ETA per job and model, the open batches and the
    budget (`budget_limit`: the config's batch.budget_usd)."""
    of_job = "WHERE job = :job" if job is not None else ""
    by_job: dict[str, dict[str, int]] = {}
    for row in reader.rows(f"SELECT job, status, count(*) AS n FROM items {of_job} "
                           "GROUP BY job, status ORDER BY job", {"job": job}):
        by_job.setdefault(row["job"], {})[row["status"]] = int(row["n"])
    items = {s.value: sum(counts.get(s.value, 0) for counts in by_job.values())
             for s in ItemStatus}
    batch_of_job = ("WHERE id IN (SELECT batch_id FROM items WHERE job = :job)"
                    if job is not None else "")
    batches = {row["status"]: int(row["n"]) for row in reader.rows(
        f"SELECT status, count(*) AS n FROM batches {batch_of_job} GROUP BY status",
        {"job": job})}
    oldest = reader.scalar(f"SELECT min(created_at) FROM batches WHERE status IN {_OPEN}")
    paused = reader.rows(
        "SELECT provider, paused_reason AS reason, paused_at, next_probe_at "
        "FROM provider_state WHERE paused_reason IS NOT NULL")
    errors = reader.rows(
        "SELECT id, provider_batch_id, status, last_error, next_action_at FROM batches "
        f"WHERE status IN {_OPEN} AND last_error IS NOT NULL ORDER BY updated_at DESC LIMIT 10")
    leases = reader.rows("SELECT host, pid, heartbeat_at, expires_at FROM daemon_lease")
    deletions = reader.rows(
        "SELECT count(*) AS pending, count(last_error) AS failing "
        "FROM file_deletions WHERE deleted_at IS NULL")[0]
    deletion_error = reader.scalar(
        "SELECT last_error FROM file_deletions WHERE deleted_at IS NULL "
        "AND last_error IS NOT NULL ORDER BY due_at DESC LIMIT 1")
    live = reader.rows(
        "SELECT w.host, w.pid, w.heartbeat_at, (SELECT count(*) FROM batches b "
        "WHERE b.claimed_by = w.id AND b.status <> 'ingested') AS claimed "
        "FROM workers w WHERE w.expires_at >= :now ORDER BY w.started_at", {"now": now})
    for error in errors:
        next_at = error.pop("next_action_at")
        error["next_try_in_seconds"] = None if next_at is None else round(
            max(next_at - now, 0.0), 1)
    daemon = leases[0] if leases else None
    report = {
        "items": items,
        "jobs": {name: {"items": {s.value: counts.get(s.value, 0) for s in ItemStatus}}
                 for name, counts in by_job.items()},
        "batches": {s.value: batches.get(s.value, 0) for s in BatchStatus},
        "oldest_open_batch_age_seconds": None if oldest is None else round(now - oldest, 1),
        "paused_providers": paused,
        "batch_errors": errors,
        "daemon": None if daemon is None or daemon["expires_at"] < now else {
            "host": daemon["host"], "pid": daemon["pid"],
            "heartbeat_age_seconds": round(now - daemon["heartbeat_at"], 1)},
        "provider_files_to_delete": {"pending": int(deletions["pending"]),
                                     "failing": int(deletions["failing"]),
                                     "last_error": deletion_error},
        "workers": [{"host": w["host"], "pid": w["pid"],
                     "heartbeat_age_seconds": round(max(now - w["heartbeat_at"], 0.0), 1),
                     "claimed_batches": w["claimed"]} for w in live],
    }
    if prices is not None:
        report["jobs"] = progress.jobs_report(reader, now, prices, job)
        report["open_batches"] = progress.open_batches(reader, now, job)
        report["budget"] = progress.budget_report(reader, prices, budget_limit)
    return report


def results_of(reader: Reader, status: ItemStatus | None = None, job: str | None = None,
               prices: PriceBook | None = None) -> Iterator[dict[str, Any]]:
    """One record per item (of `job`, with `status`), in enqueue order; `provider_batch_id`
    is of the batch its outcome came from (the last batch it was in); `metadata` is the
    item's own object, parsed; `cost_usd` what its result cost at `prices` (None for an item
    with no result, "unknown" without a price)."""
    conditions = [f"i.{column} = :{column}" for column, value in
                  (("status", status), ("job", job)) if value is not None]
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    for record in reader.stream(
            "SELECT i.id, i.status, i.output_text, i.error_message, i.error_code, i.attempts, "
            "b.provider_batch_id, i.model, i.provider, i.prompt_tokens, i.completion_tokens, "
            "i.total_tokens, i.cached_tokens, i.reasoning_tokens, i.job, i.metadata "
            "FROM items i "
            f"LEFT JOIN batches b ON b.id = i.batch_id {where} "
            f"ORDER BY {enqueue_order(reader.dialect, 'i')}",
            {"status": None if status is None else str(status), "job": job}):
        if record["metadata"] is not None:
            record["metadata"] = json.loads(record["metadata"])
        record["cost_usd"] = item_cost(record, prices)
        yield record


def item_cost(record: dict[str, Any], prices: PriceBook | None) -> str | None:
    """What an item's result cost (a decimal string; "unknown" without a price; None for an
    item with no result)."""
    if record["status"] != ItemStatus.SUCCEEDED.value:
        return None
    price = prices.price(record["provider"], record["model"]) if prices else None
    prompt = record["prompt_tokens"]
    if record["completion_tokens"] is None:
        prompt = None  # a line that gave no complete usage: its cost is unknown
    return usd_text(cost(Usage(prompt=prompt, cached=record["cached_tokens"] or 0,
                               completion=record["completion_tokens"] or 0,
                               reasoning=record["reasoning_tokens"] or 0), price))


def status_report(engine: Engine, now: float) -> dict[str, Any]:
    with engine_snapshot(engine) as reader:
        return status_of(reader, now)


def is_idle(engine: Engine, now: float) -> bool:
    """No item waiting or in flight, no batch open (for any worker), and no provider file
    due for deletion (one whose deletes fail and wait for a later try does not count).
    Batches that wait for budget, and their items, do not count either: a close that
    releases a hold puts them up for another check (they count again until it), so what is
    left waits for someone to raise the budget."""
    with engine_snapshot(engine) as reader:
        return not reader.scalar(
            "SELECT EXISTS (SELECT 1 FROM items WHERE status = 'queued') "
            "OR EXISTS (SELECT 1 FROM items WHERE status = 'in_batch' AND batch_id NOT IN "
            f"(SELECT id FROM batches WHERE {WAITING_FOR_BUDGET})) "
            f"OR EXISTS (SELECT 1 FROM batches WHERE status IN {_OPEN} "
            f"AND NOT ({WAITING_FOR_BUDGET})) "
            "OR EXISTS (SELECT 1 FROM file_deletions WHERE deleted_at IS NULL "
            "AND due_at <= :now)", {"now": now})


def waiting_for_budget(engine: Engine) -> int:
    with engine_snapshot(engine) as reader:
        return int(reader.scalar(f"SELECT count(*) FROM batches WHERE {WAITING_FOR_BUDGET}"))
