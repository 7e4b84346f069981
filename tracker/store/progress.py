"""Progress and spend per job and model, the open batches, and the budget: the parts of
`tracker status` that need prices.

Throughput is observed, not assumed: items finished since the job's first batch was sent,
over the time since (until the last one finished, once none is left). The ETA is what is
left at that rate (batch APIs finish in lumps, so it is a rough guide early on), and none
while what is left waits for budget. The
projection is what was billed plus what is left at the average billed cost of the results so
far; None until one result is billed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal, localcontext
from typing import Any

from tracker.costs import row_cost
from tracker.pricing import EXACT, PriceBook, usd_text
from tracker.states import OPEN_BATCH, ItemStatus
from tracker.store import spend
from tracker.store.ledger import RESULT, usage_by
from tracker.store.reader import Reader

_FINISHED = (ItemStatus.SUCCEEDED.value, ItemStatus.FAILED.value, ItemStatus.CANCELLED.value)
_LEFT = (ItemStatus.QUEUED.value, ItemStatus.IN_BATCH.value)
OPEN_BATCHES_SHOWN = 20
#: Projections divide: rounded on purpose (the ledger's sums stay exact).
AVERAGE = Context(prec=40)


@dataclass
class _Line:
    """One job and model."""

    counts: dict[str, int]
    spent: Decimal | None = Decimal(0)
    billed_results: int = 0
    results_cost: Decimal | None = Decimal(0)
    first_sent: float | None = None
    last_finished: float | None = None
    waiting_for_budget: int = 0

    def add_cost(self, row: dict[str, Any], amount: Decimal | None) -> None:
        self.spent = None if amount is None or self.spent is None else self.spent + amount
        if row["kind"] == RESULT:
            self.billed_results += int(row["items"])
            self.results_cost = (None if amount is None or self.results_cost is None
                                 else self.results_cost + amount)

    def summary(self, now: float) -> dict[str, Any]:
        left = sum(self.counts.get(s, 0) for s in _LEFT)
        finished = sum(self.counts.get(s, 0) for s in _FINISHED)
        rate = None
        until = now if left or self.last_finished is None else self.last_finished
        if finished and self.first_sent is not None and until > self.first_sent:
            rate = finished / (until - self.first_sent)
        moving = left - self.waiting_for_budget  # the rest waits for someone to raise a budget
        eta = 0.0 if left == 0 else (round(left / rate, 1) if rate and moving > 0 else None)
        projected: Decimal | None = None
        if self.spent is not None:
            if left == 0:
                projected = self.spent
            elif self.billed_results and self.results_cost is not None:
                with localcontext(AVERAGE):
                    projected = (self.spent + self.results_cost * left
                                 / self.billed_results).quantize(Decimal("0.000001"))
        return {"items": {s.value: self.counts.get(s.value, 0) for s in ItemStatus},
                "spent_usd": usd_text(self.spent),
                "projected_usd": None if projected is None else usd_text(projected),
                "eta_seconds": eta,
                "items_per_hour": None if rate is None else round(rate * 3600, 1)}


def jobs_report(reader: Reader, now: float, prices: PriceBook,
                job: str | None = None) -> dict[str, dict[str, Any]]:
    """Per job: its models' summaries under "models", and their sums."""
    of_job = "WHERE job = :job" if job is not None else ""
    lines: dict[tuple[str, str], _Line] = {}
    for row in reader.rows(f"SELECT job, model, status, count(*) AS n, max(finished_at) AS last "
                           f"FROM items {of_job} GROUP BY job, model, status", {"job": job}):
        line = lines.setdefault((row["job"], row["model"]), _Line({}))
        line.counts[row["status"]] = int(row["n"])
        if row["last"] is not None:
            line.last_finished = max(float(row["last"]), line.last_finished or 0.0)
    for row in reader.rows(f"SELECT job, model, min(submitted_at) AS first FROM batches "
                           f"{of_job} GROUP BY job, model", {"job": job}):
        if (row["job"], row["model"]) in lines and row["first"] is not None:
            lines[(row["job"], row["model"])].first_sent = float(row["first"])
    for row in reader.rows(f"SELECT job, model, sum(item_count) AS n FROM batches "
                           f"WHERE {spend.WAITING_FOR_BUDGET} "
                           f"{'AND job = :job' if job is not None else ''} GROUP BY job, model",
                           {"job": job}):
        if (row["job"], row["model"]) in lines:
            lines[(row["job"], row["model"])].waiting_for_budget = int(row["n"] or 0)
    with localcontext(EXACT):
        for row in usage_by(reader, "job", job):
            line = lines.setdefault((row["key"], row["model"]), _Line({}))
            line.add_cost(row, row_cost(row, prices))
        budgets = spend.job_budgets(reader)
        report: dict[str, dict[str, Any]] = {}
        for (job_name, model), line in sorted(lines.items()):
            entry = report.setdefault(job_name, {"models": {}})
            entry["models"][model] = line.summary(now)
        for job_name, entry in report.items():
            entry.update(_job_totals(list(entry["models"].values())))
            limit = budgets.get(job_name)
            entry["budget_usd"] = None if limit is None else usd_text(limit)
    return report


def _job_totals(models: list[dict[str, Any]]) -> dict[str, Any]:
    def total(key: str) -> str | None:
        values = [m[key] for m in models]
        if any(v is None for v in values):
            return None
        if "unknown" in values:
            return "unknown"
        return usd_text(sum((Decimal(v) for v in values), Decimal(0)))

    etas = [m["eta_seconds"] for m in models]
    rates = [m["items_per_hour"] for m in models if m["items_per_hour"] is not None]
    return {"items": {s.value: sum(m["items"][s.value] for m in models) for s in ItemStatus},
            "spent_usd": total("spent_usd"), "projected_usd": total("projected_usd"),
            "eta_seconds": None if any(e is None for e in etas) else max(etas, default=0.0),
            "items_per_hour": round(sum(rates), 1) if rates else None}


def open_batches(reader: Reader, now: float, job: str | None = None) -> list[dict[str, Any]]:
    statuses = ", ".join(sorted(f"'{s.value}'" for s in OPEN_BATCH))
    of_job = "AND job = :job" if job is not None else ""
    rows = reader.rows(
        "SELECT id, provider_batch_id, job, model, provider, status, provider_status, "
        "item_count AS items, request_completed, request_failed, request_total, "
        f"COALESCE(submitted_at, created_at) AS since FROM batches WHERE status IN ({statuses}) "
        f"{of_job} ORDER BY created_at LIMIT {OPEN_BATCHES_SHOWN}", {"job": job})
    for row in rows:
        row["age_seconds"] = round(max(now - float(row.pop("since")), 0.0), 1)
    return rows


def budget_report(reader: Reader, prices: PriceBook, limit: Decimal | None) -> dict[str, Any]:
    now_spent = spend.spend_of(reader, prices)
    waiting = spend.waiting_batches(reader)
    return {"limit_usd": None if limit is None else usd_text(limit),
            "spent_usd": usd_text(now_spent.spent),
            "in_flight_usd": usd_text(now_spent.in_flight),
            "waiting_batches": len(waiting), "waiting": waiting,
            "jobs": {name: usd_text(amount) for name, amount in
                     spend.job_budgets(reader).items()}}
