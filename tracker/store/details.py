"""Read models behind `tracker show ID`: one item, or one batch, with its whole history."""

from __future__ import annotations

import json
from typing import Any

from tracker.store.reader import Reader

_ITEM_FIELDS = (
    "id", "status", "status_reason", "provider", "model", "attempts", "free_attempts",
    "batch_id", "est_tokens", "prompt_tokens", "completion_tokens", "total_tokens",
    "cached_tokens", "reasoning_tokens",
    "output_text", "error_message", "error_code", "error_status", "created_at", "updated_at",
    "finished_at", "not_before", "payload", "job", "metadata", "custom_id")
_BATCH_FIELDS = (
    "id", "status", "status_reason", "provider", "model", "endpoint", "provider_batch_id",
    "provider_status", "input_file_id", "output_file_id", "error_file_id", "item_count",
    "est_tokens", "request_total", "request_completed", "request_failed", "succeeded_count",
    "failed_count", "requeued_count", "cancelled_count", "create_attempts", "duplicate_of",
    "cancel_requested", "last_error", "batch_errors", "created_at", "submitted_at",
    "ended_at", "ingested_at", "claimed_by", "job", "budget_hold_usd", "budget_wait",
    "provider_time_at_intent")


def _history(reader: Reader, entity: str, entity_id: str) -> list[dict[str, Any]]:
    return reader.rows(
        "SELECT at, from_status AS \"from\", to_status AS \"to\", reason FROM transitions "
        "WHERE entity = :entity AND entity_id = :id ORDER BY at, id",
        {"entity": entity, "id": entity_id})


def item_detail(reader: Reader, item_id: str) -> dict[str, Any] | None:
    """The item's row (its payload parsed), the batch its outcome came from, its history."""
    rows = reader.rows(
        f"SELECT {', '.join('i.' + f for f in _ITEM_FIELDS)}, "
        "b.provider_batch_id FROM items i LEFT JOIN batches b ON b.id = i.batch_id "
        "WHERE i.id = :id", {"id": item_id})
    if not rows:
        return None
    item = rows[0]
    item["payload"] = json.loads(item["payload"])
    if item["metadata"] is not None:
        item["metadata"] = json.loads(item["metadata"])
    item["transitions"] = _history(reader, "item", item_id)
    return item


def batch_detail(reader: Reader, batch_id: str) -> dict[str, Any] | None:
    """The batch (by local or provider id), its items by status, its files' deletion and its
    history."""
    rows = reader.rows(
        f"SELECT {', '.join(_BATCH_FIELDS)} FROM batches "
        "WHERE id = :id OR provider_batch_id = :id", {"id": batch_id})
    if not rows:
        return None
    batch = rows[0]
    if batch["batch_errors"]:
        batch["batch_errors"] = json.loads(batch["batch_errors"])
    batch["items_by_status"] = {row["status"]: int(row["n"]) for row in reader.rows(
        "SELECT status, count(*) AS n FROM items WHERE batch_id = :id GROUP BY status "
        "ORDER BY status", {"id": batch["id"]})}
    batch["file_deletions"] = reader.rows(
        "SELECT file_id, kind, attempts, last_error, deleted_at FROM file_deletions "
        "WHERE batch_id = :id ORDER BY kind", {"id": batch["id"]})
    batch["transitions"] = _history(reader, "batch", batch["id"])
    return batch
