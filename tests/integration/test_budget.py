"""Budgets: a batch is sent only when what was billed, plus the worst case of every batch in
flight, plus its own worst case fits; otherwise it waits with the reason on it, and a raised
budget lets it go. The real steps, the real `openai` SDK over HTTP to the fake Batch API, a
real database on either engine, one manual clock."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tests.integration.daemon_harness import drive, enqueue, items_by_status, make_config
from tests.integration.daemon_harness import make_context as harness_context
from tracker.context import Context
from tracker.costs import cost_report
from tracker.daemon import is_idle, run_steps_once
from tracker.pricing import PriceBook, to_decimal
from tracker.store.engine import read, write
from tracker.store.reader import engine_snapshot
from tracker.store.reports import status_of
from tracker.store.spend import set_job_budget, spend_of
from tracker.testing.fake_openai import FakeOpenAI, Fault, ManualClock

#: Dollars per million tokens: each line below costs 10 x 1 + 5 x 2 = 20 millionths.
PRICES = {"input": 1.0, "cached_input": 0.5, "output": 2.0}
MAX_TOKENS = 20  # the harness's max_tokens on every item


def _context(engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path,
             **batch: Any) -> Context:
    config = make_config(max_prompts=2, prices_per_million=PRICES)
    if batch:
        config = config.model_copy(update={"batch": config.batch.model_copy(update=batch)})
    return harness_context(engine, server, clock, tmp_path, config)


def _enqueue_six(ctx: Context) -> None:
    enqueue(ctx, {f"q{i}": f"question {i} [usage:10,5,0,0]" for i in range(6)}, job="capped")


def _pair_worst_case(engine: Engine) -> Decimal:
    """Two items' estimated prompt tokens at the input price plus 2 x max_tokens at the
    output price (every item has the same estimate)."""
    with read(engine) as conn:
        estimates = set(conn.execute(text("SELECT est_tokens FROM items")).scalars())
    assert len(estimates) == 1
    return (Decimal(2 * estimates.pop()) * 1 + 2 * MAX_TOKENS * 2) / 1_000_000


def _spent_and_in_flight(ctx: Context) -> tuple[Decimal, Decimal]:
    with engine_snapshot(ctx.engine) as reader:
        spend = spend_of(reader, PriceBook(ctx.config))
        assert spend.spent is not None
        return spend.spent, spend.in_flight


def _run_until(ctx: Context, clock: ManualClock, limit: Decimal, done: Any,
               max_ticks: int = 200) -> None:
    """Tick until `done()`, checking after every tick that the cap holds."""
    for _ in range(max_ticks):
        run_steps_once(ctx)
        spent, in_flight = _spent_and_in_flight(ctx)
        assert spent <= limit, (spent, limit)
        assert spent + in_flight <= limit, (spent, in_flight, limit)
        if done():
            return
        clock.advance(1.0)
    raise AssertionError(f"not done after {max_ticks} ticks: {items_by_status(ctx)}")


def _waiting(ctx: Context) -> list[dict[str, Any]]:
    with engine_snapshot(ctx.engine) as reader:
        report = status_of(reader, ctx.now(), prices=PriceBook(ctx.config))
    return report["budget"]["waiting"]


def test_job_budget__the_cap_is_never_crossed_and_raising_it_resumes(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = _context(engine, server, clock, tmp_path)
    _enqueue_six(ctx)
    worst = _pair_worst_case(engine)
    # One batch's worst case and one batch's real cost fit; a third batch never does.
    limit = worst + Decimal("0.000041")
    with write(engine) as conn:
        set_job_budget(conn, "capped", limit, clock())

    def stalled() -> bool:
        return items_by_status(ctx) == {"succeeded": 4, "in_batch": 2} and bool(_waiting(ctx))

    _run_until(ctx, clock, limit, stalled)
    waiting = _waiting(ctx)
    assert len(waiting) == 1 and waiting[0]["job"] == "capped"
    assert "waiting for budget (job capped" in waiting[0]["reason"]
    assert len(server.batches) == 2  # the third batch never reached the provider
    assert is_idle(ctx)  # `run --until-idle` exits: only a raised budget changes anything
    with engine_snapshot(engine) as reader:
        job = status_of(reader, ctx.now(), prices=PriceBook(ctx.config))["jobs"]["capped"]
    assert job["eta_seconds"] is None  # what is left waits for a person, not for time
    spent, in_flight = _spent_and_in_flight(ctx)
    assert (spent, in_flight) == (Decimal("0.00008"), Decimal(0))

    with write(engine) as conn:
        set_job_budget(conn, "capped", Decimal("1"), clock())
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 6}
    assert _waiting(ctx) == []
    with engine_snapshot(engine) as reader:
        assert cost_report(reader, PriceBook(ctx.config))["total_usd"] == "0.00012"


def test_config_budget__a_batch_whose_worst_case_cannot_fit_waits_and_says_why(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = _context(engine, server, clock, tmp_path, budget_usd=0.0001)
    _enqueue_six(ctx)
    assert _pair_worst_case(engine) > Decimal("0.0001")  # not even one batch fits
    _run_until(ctx, clock, to_decimal(0.0001), lambda: len(_waiting(ctx)) == 3)
    assert server.batches == {}
    assert is_idle(ctx)
    with engine_snapshot(engine) as reader:
        report = status_of(reader, ctx.now(), prices=PriceBook(ctx.config),
                           budget_limit=to_decimal(0.0001))
    budget = report["budget"]
    assert (budget["limit_usd"], budget["spent_usd"], budget["in_flight_usd"],
            budget["waiting_batches"]) == ("0.0001", "0.00", "0.00", 3)
    reason = budget["waiting"][0]["reason"]
    assert "waiting for budget (batch.budget_usd $0.0001)" in reason
    assert "this batch at most" in reason
    assert report["jobs"]["capped"]["spent_usd"] == "0.00"


def test_budget_set_after_an_upload__the_batch_is_checked_before_its_create(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = _context(engine, server, clock, tmp_path)
    enqueue(ctx, {"q0": "question 0 [usage:10,5,0,0]"}, job="capped")
    # Packed and uploaded with no budget; the create is refused (429): no batch was made.
    server.add_fault(Fault(method="POST", path="/v1/batches", status=429, times=1))
    run_steps_once(ctx)
    with read(engine) as conn:
        uploaded, attempted = conn.execute(text(
            "SELECT input_file_id, create_attempted_at FROM batches")).one()
    assert uploaded is not None and attempted is None
    with write(engine) as conn:
        set_job_budget(conn, "capped", Decimal(0), clock())
    _run_until(ctx, clock, Decimal(0), lambda: len(_waiting(ctx)) == 1)
    for _ in range(5):
        clock.advance(2.0)
        run_steps_once(ctx)
    assert server.batches == {}  # never created: the cap is $0


def test_a_close_releases_its_hold__run_until_idle_sends_the_batch_that_now_fits(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = _context(engine, server, clock, tmp_path)
    enqueue(ctx, {f"q{i}": f"question {i} [usage:10,5,0,0]" for i in range(4)}, job="capped")
    limit = _pair_worst_case(engine) + Decimal("0.00004")  # one in flight; the next after it
    with write(engine) as conn:
        set_job_budget(conn, "capped", limit, clock())
    drive(ctx, clock)  # stops only when idle
    assert items_by_status(ctx) == {"succeeded": 4}


def test_a_job_out_of_budget_never_holds_another_job_back(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    config = make_config(max_prompts=1, prices_per_million=PRICES, max_enqueued_tokens=60)
    ctx = harness_context(engine, server, clock, tmp_path, config)
    enqueue(ctx, {"b1": "broke one", "b2": "broke two"}, job="broke")
    enqueue(ctx, {"f1": "free one", "f2": "free two"}, job="free")
    with write(engine) as conn:
        set_job_budget(conn, "broke", Decimal(0), clock())
    drive(ctx, clock)
    with read(engine) as conn:
        by_job = dict(conn.execute(text(
            "SELECT job, group_concat(DISTINCT status) FROM items GROUP BY job")
            if engine.dialect.name == "sqlite" else text(
            "SELECT job, string_agg(DISTINCT status, ',') FROM items GROUP BY job")).all())
    assert by_job == {"broke": "in_batch", "free": "succeeded"}
    assert len(_waiting(ctx)) == 2


def test_a_line_without_a_completion_count_costs_unknown(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = _context(engine, server, clock, tmp_path)
    server.responder = lambda custom_id, body: (200, {
        "id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000}})
    enqueue(ctx, {"q0": "question"}, job="partial")
    drive(ctx, clock)
    with engine_snapshot(engine) as reader:
        report = cost_report(reader, PriceBook(ctx.config))
    assert report["total_usd"] == "unknown"
    assert report["rows"][0]["prompt_tokens"] == 1000


def test_a_duplicate_provider_batch_holds_the_same_worst_case_until_closed(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=100.0,
                    cancelling_seconds=1.0, list_lag_seconds=20.0) as server:
        config = make_config(max_prompts=2, provider={"list_lag_grace": 5.0},
                             prices_per_million=PRICES)
        ctx = harness_context(engine, server, clock, tmp_path, config)
        server.add_fault(Fault(method="POST", path="/v1/batches", kind="drop_after", times=1))
        enqueue(ctx, {"q0": "question 0 [usage:10,5,0,0]", "q1": "question 1 [usage:10,5,0,0]"},
                job="capped")
        with write(engine) as conn:
            set_job_budget(conn, "capped", Decimal(1), clock())

        def duplicate_found() -> bool:
            with read(engine) as conn:
                return bool(conn.execute(text(
                    "SELECT count(*) FROM batches WHERE duplicate_of IS NOT NULL")).scalar())

        _run_until(ctx, clock, Decimal(1), duplicate_found)
        with read(engine) as conn:
            holds = conn.execute(text(
                "SELECT budget_hold_usd FROM batches ORDER BY duplicate_of IS NULL")).scalars()
            original_hold, duplicate_hold = sorted(Decimal(h) for h in holds)
        assert duplicate_hold == original_hold > 0
        assert _spent_and_in_flight(ctx)[1] == 2 * original_hold
        drive(ctx, clock)
        assert items_by_status(ctx) == {"succeeded": 2}
        assert _spent_and_in_flight(ctx)[1] == 0
