"""The usage ledger: one row per result line the provider billed (see schema 009).

Rows are written in the transaction that closes their batch and keyed by (batch, line), so
running a close again adds nothing. Reads group the tokens by a key and by model (a price is
per model); `tracker.costs` turns them into amounts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tracker.store.reader import Reader, sql_text

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from tracker.models import Batch
    from tracker.providers.base import ProviderResultRow


RESULT = "result"
WASTE = "waste"
GROUPINGS = ("job", "model", "day", "batch")


def record_batch_results(conn: Connection, batch_id: str, billed_at: float) -> int:
    """A row for every item whose result came from this batch (the lines the provider ran
    and billed, kept from completed, expired and cancelled batches alike)."""
    return conn.execute(sql_text(
        "INSERT INTO usage_ledger (batch_id, item_id, provider, model, job, kind, "
        "prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, billed_at) "
        "SELECT batch_id, id, provider, model, job, :kind, prompt_tokens, "
        "COALESCE(cached_tokens, 0), completion_tokens, COALESCE(reasoning_tokens, 0), "
        ":billed_at FROM items WHERE batch_id = :batch_id AND status = 'succeeded' "
        "ON CONFLICT DO NOTHING"),
        {"kind": RESULT, "batch_id": batch_id, "billed_at": billed_at}).rowcount


def record_waste(conn: Connection, batch: Batch, lines: Iterable[ProviderResultRow],
                 billed_at: float) -> int:
    """Rows for the lines a duplicate provider batch ran before it was cancelled: billed,
    but their results are discarded."""
    rows = [{"batch_id": batch.id, "item_id": line.custom_id, "provider": batch.provider,
             "model": batch.model, "job": batch.job, "kind": WASTE,
             "prompt_tokens": line.prompt_tokens, "cached_tokens": line.cached_tokens or 0,
             "completion_tokens": line.completion_tokens,
             "reasoning_tokens": line.reasoning_tokens or 0, "billed_at": billed_at}
            for line in lines if line.is_success]
    if not rows:
        return 0
    conn.execute(sql_text(
        "INSERT INTO usage_ledger (batch_id, item_id, provider, model, job, kind, "
        "prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, billed_at) "
        "VALUES (:batch_id, :item_id, :provider, :model, :job, :kind, :prompt_tokens, "
        ":cached_tokens, :completion_tokens, :reasoning_tokens, :billed_at) "
        "ON CONFLICT DO NOTHING"), rows)
    return len(rows)


def _key_expression(by: str, dialect: str) -> str:
    if by == "day":
        if dialect == "postgresql":
            return "to_char(to_timestamp(billed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        return "strftime('%Y-%m-%d', billed_at, 'unixepoch')"
    return {"job": "job", "model": "model", "batch": "batch_id"}[by]


def usage_by(reader: Reader, by: str, job: str | None = None) -> list[dict[str, Any]]:
    """Token sums per (key, provider, model, kind); `unpriced` counts lines with no usage."""
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}")
    key = _key_expression(by, reader.dialect)
    where = "WHERE job = :job" if job is not None else ""
    return reader.rows(
        f"SELECT {key} AS key, provider, model, kind, count(*) AS items, "
        "sum(prompt_tokens) AS prompt_tokens, sum(cached_tokens) AS cached_tokens, "
        "sum(COALESCE(completion_tokens, 0)) AS completion_tokens, "
        "sum(reasoning_tokens) AS reasoning_tokens, "
        "sum(CASE WHEN prompt_tokens IS NULL OR completion_tokens IS NULL THEN 1 ELSE 0 END) "
        "AS without_usage "
        f"FROM usage_ledger {where} GROUP BY {key}, provider, model, kind ORDER BY 1",
        {"job": job})
