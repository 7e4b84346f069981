"""Spend and budgets as stored: what the ledger says was billed, what the batches in flight
may still cost at worst (their holds), and the jobs' own limits. Amounts are exact decimals;
None where a price is unknown."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Any

from tracker.costs import row_cost
from tracker.errors import StaleBatch
from tracker.pricing import EXACT, PriceBook
from tracker.store.ledger import usage_by
from tracker.store.reader import Reader, sql_text

if TYPE_CHECKING:
    from sqlalchemy import Connection

#: Batches held back by the budget gate (an SQL condition on `batches`): only a raised
#: budget, or a closed batch releasing its hold, lets them go.
WAITING_FOR_BUDGET = "status = 'pending' AND budget_wait IS NOT NULL"
#: PostgreSQL advisory lock taken by every budget check: two workers never admit batches
#: against the same headroom at once (SQLite's single writer does the same).
BUDGET_LOCK = 7_350_003


@dataclass
class Spend:
    """Billed (None: unknown) and held for batches in flight, in total and per job."""

    spent: Decimal | None = Decimal(0)
    in_flight: Decimal = Decimal(0)
    spent_by_job: dict[str, Decimal | None] = field(default_factory=dict)
    in_flight_by_job: dict[str, Decimal] = field(default_factory=dict)
    #: Models (and jobs) with billed lines of unknown cost.
    unpriced: set[str] = field(default_factory=set)

    def job_spent(self, job: str) -> Decimal | None:
        return self.spent_by_job.get(job, Decimal(0))

    def job_in_flight(self, job: str) -> Decimal:
        return self.in_flight_by_job.get(job, Decimal(0))


def spend_of(reader: Reader, prices: PriceBook, *, leave_out: str | None = None) -> Spend:
    """`leave_out`: a batch whose own hold is not counted (the one being checked). The holds
    are read before the ledger: a batch closed between the two reads (PostgreSQL reads each
    statement afresh) is then counted twice, never not at all."""
    spend = Spend()
    with localcontext(EXACT):
        for row in reader.rows("SELECT id, job, budget_hold_usd FROM batches WHERE status <> "
                               "'ingested' AND budget_hold_usd IS NOT NULL"):
            if row["id"] == leave_out:
                continue
            hold = Decimal(row["budget_hold_usd"])
            spend.in_flight += hold
            spend.in_flight_by_job[row["job"]] = spend.job_in_flight(row["job"]) + hold
        for row in usage_by(reader, "job"):
            amount = row_cost(row, prices)
            job = str(row["key"])
            before = spend.spent_by_job.get(job, Decimal(0))
            spend.spent_by_job[job] = None if amount is None or before is None else (
                before + amount)
            spend.spent = None if amount is None or spend.spent is None else (
                spend.spent + amount)
            if amount is None:
                spend.unpriced.add(f"{row['provider']}/{row['model']} (job {job})")
    return spend


def job_budgets(reader: Reader) -> dict[str, Decimal]:
    return {row["name"]: Decimal(row["budget_usd"]) for row in reader.rows(
        "SELECT name, budget_usd FROM jobs WHERE budget_usd IS NOT NULL")}


def waiting_batches(reader: Reader) -> list[dict[str, Any]]:
    return reader.rows(
        "SELECT id AS batch_id, job, model, budget_wait AS reason FROM batches "
        f"WHERE {WAITING_FOR_BUDGET} ORDER BY created_at")


def set_job_budget(conn: Connection, job: str, budget_usd: Decimal | None, now: float) -> None:
    conn.execute(sql_text(
        "INSERT INTO jobs (name, budget_usd, created_at, updated_at) "
        "VALUES (:job, :usd, :now, :now) ON CONFLICT (name) DO UPDATE "
        "SET budget_usd = excluded.budget_usd, updated_at = excluded.updated_at"),
        {"job": job, "usd": None if budget_usd is None else str(budget_usd), "now": now})
    recheck_waiting(conn, now, job)


def recheck_waiting(conn: Connection, now: float, job: str | None = None) -> None:
    """A budget changed (or may have: a worker starts with a config read anew): the batches
    waiting for it are due for another check at once, and count as work again."""
    of_job = "AND job = :job" if job is not None else ""
    conn.execute(sql_text(
        "UPDATE batches SET budget_wait = NULL, next_action_at = :now, updated_at = :now "
        f"WHERE {WAITING_FOR_BUDGET} {of_job}"),
        {"now": now, "job": job})


def lock_budgets(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"), {"key": BUDGET_LOCK})


def unheld_open_batches(conn: Connection) -> list[str]:
    """Open batches that may exist at the provider and hold nothing yet (sent while no
    budget applied). A pending batch never sent is not one: it passes the gate first."""
    return list(conn.execute(sql_text(
        "SELECT id FROM batches WHERE status <> 'ingested' AND budget_hold_usd IS NULL "
        "AND duplicate_of IS NULL AND (status <> 'pending' OR create_attempted_at IS NOT NULL)"
        )).scalars())


def set_hold(conn: Connection, batch_id: str, hold: Decimal, now: float) -> bool:
    """Hold `hold` for the batch; False when it holds something already or has closed."""
    return conn.execute(sql_text(
        "UPDATE batches SET budget_hold_usd = :hold, budget_wait = NULL, updated_at = :now "
        "WHERE id = :id AND budget_hold_usd IS NULL AND status <> 'ingested'"),
        {"hold": str(hold), "now": now, "id": batch_id}).rowcount == 1


def set_wait(conn: Connection, batch_id: str, reason: str, next_action_at: float,
             now: float) -> None:
    matched = conn.execute(sql_text(
        "UPDATE batches SET budget_wait = :reason, next_action_at = :next, updated_at = :now "
        "WHERE id = :id AND status = 'pending'"),
        {"reason": reason, "next": next_action_at, "now": now, "id": batch_id}).rowcount
    if matched != 1:
        raise StaleBatch(f"batch {batch_id} left pending while it waited for budget")
