"""The budget gate, passed by every batch before its first upload.

A batch may be sent when what was billed, plus the worst case of every batch in flight, plus
this batch's worst case fits under each limit that applies: `batch.budget_usd` (the whole
database) and its job's `--budget-usd`. The worst case: its estimated prompt tokens at the
full input price plus, for each request, the largest of its `max_tokens`,
`max_completion_tokens` and `max_output_tokens`, else its model's `max_tokens` default, else
the model's output cap, times its `n` or `best_of` choices, at the output price (an embedding
has no output). A batch that passes holds its worst case until it
is closed, when the ledger holds what it really cost. A batch that does not fit waits,
pending, with the reason on it (`tracker status`), and is checked again every poll interval
and whenever a batch closes: a raised budget, or batches that cost less than their worst
case, let it go. The check and the hold are one transaction under a lock, so workers never spend
the same headroom twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal, localcontext

from sqlalchemy import Connection, text

from tracker.context import Context, log
from tracker.models import Batch
from tracker.pricing import EXACT, PriceBook, Usage, cost, to_decimal, usd_text
from tracker.store import spend
from tracker.store.batches import as_batches
from tracker.store.engine import read
from tracker.store.reader import ConnectionReader

#: The request keys that cap a request's output tokens (chat, legacy chat, responses).
OUTPUT_CAP_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def admit(ctx: Context, batch: Batch) -> bool:
    """Whether `batch` may be sent now (holding its worst case when a budget applies)."""
    if batch.budget_hold_usd is not None:
        return True
    prices = PriceBook(ctx.config)
    with read(ctx.engine) as conn:
        limits = _limits(ctx, conn, batch.job)
        if not limits:
            return True
        _hold_unheld(ctx, conn, prices)
        worst = worst_case(conn, batch, prices)
    now = ctx.now()
    with ctx.write() as conn:
        spend.lock_budgets(conn)
        reason = _over_budget(ConnectionReader(conn), prices, batch, worst, limits)
        if reason is None:
            spend.set_hold(conn, batch.id, worst or Decimal(0), now)
            if batch.budget_wait:
                log.info("batch %s: fits the budget now; submitting", batch.id)
            return True
        spend.set_wait(conn, batch.id, reason, now + max(ctx.poll_interval, 1.0), now)
    if reason != batch.budget_wait:
        log.warning("batch %s: %s", batch.id, reason)
    return False


def _limits(ctx: Context, conn: Connection, job: str) -> dict[str, Decimal]:
    """The limits that apply to a batch of `job`: {"the whole database" | "job J": usd}."""
    limits: dict[str, Decimal] = {}
    if ctx.config.batch.budget_usd is not None:
        limits["batch.budget_usd"] = to_decimal(ctx.config.batch.budget_usd)
    job_limit = spend.job_budgets(ConnectionReader(conn)).get(job)
    if job_limit is not None:
        limits[f"job {job}"] = job_limit
    return limits


def _over_budget(reader: ConnectionReader, prices: PriceBook, batch: Batch,
                 worst: Decimal | None, limits: dict[str, Decimal]) -> str | None:
    """Why the batch may not be sent now, or None."""
    if worst is None:
        return (f"waiting for budget: the worst case of {batch.provider}/{batch.model} is "
                "unknown (set its prices_per_million, and max_output_tokens or max_tokens)")
    now_spent = spend.spend_of(reader, prices, leave_out=batch.id)
    for name, limit in limits.items():
        whole = name == "batch.budget_usd"
        spent = now_spent.spent if whole else now_spent.job_spent(batch.job)
        in_flight = now_spent.in_flight if whole else now_spent.job_in_flight(batch.job)
        if spent is None:
            return (f"waiting for budget: what {name} has spent is unknown (no price for "
                    f"{', '.join(sorted(now_spent.unpriced))}: set its prices_per_million)")
        with localcontext(EXACT):
            needed = spent + in_flight + worst
        if needed > limit:
            return (f"waiting for budget ({name} ${usd_text(limit)}): spent "
                    f"${usd_text(spent)} + in flight ${usd_text(in_flight)} + this batch at "
                    f"most ${usd_text(worst)} = ${usd_text(needed)}")
    return None


def worst_case(conn: Connection, batch: Batch, prices: PriceBook) -> Decimal | None:
    """The most the batch's requests can cost; None when a price or an output cap is
    unknown. An embedding (by the endpoint the batch was packed for) has no output tokens."""
    limits = prices.limits(batch.provider, batch.model)
    if limits.price is None:
        return None
    if batch.endpoint.endswith("/embeddings"):
        return cost(Usage(prompt=batch.est_tokens, completion=0), limits.price)
    payloads = conn.execute(text(
        "SELECT payload FROM items WHERE batch_id = :b AND status = 'in_batch'"),
        {"b": batch.id}).scalars()
    output = _output_tokens(payloads, limits.max_output_tokens, limits.default_max_tokens)
    if output is None:
        return None
    return cost(Usage(prompt=batch.est_tokens, completion=output), limits.price)


def _output_tokens(payloads: Iterable[str], cap: int | None,
                   default: int | None = None) -> int | None:
    """The most output tokens the requests can produce: each one's own limit, else the
    `max_tokens` it is sent with by default, else the model's cap (None: unbounded)."""
    total = 0
    for payload in payloads:
        request = json.loads(payload)
        # The largest limit given: providers differ in which key wins when several are.
        asked = max((value for key in OUTPUT_CAP_KEYS
                     if type(value := request.get(key)) is int and value >= 1), default=default)
        if asked is None:
            if cap is None:
                return None
            asked = cap
        choices = max((value for key in ("n", "best_of")
                       if type(value := request.get(key)) is int), default=1)
        total += (asked if cap is None else min(asked, cap)) * max(choices, 1)
    return total


def _hold_unheld(ctx: Context, conn: Connection, prices: PriceBook) -> None:
    """Batches sent while no budget applied hold nothing: give each its worst case now, so
    what is in flight counts (at worst an unknown price holds nothing; logged)."""
    for batch_id in spend.unheld_open_batches(conn):
        batch, = as_batches(conn.execute(text("SELECT * FROM batches WHERE id = :id"),
                                         {"id": batch_id}))
        worst = worst_case(conn, batch, prices)
        if worst is None:
            log.info("batch %s in flight: worst case unknown; not counted against the "
                     "budget", batch_id)
            continue
        with ctx.write() as write_conn:
            spend.set_hold(write_conn, batch_id, worst, ctx.now())
