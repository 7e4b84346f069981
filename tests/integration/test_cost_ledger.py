"""The cost ledger, checked to the last token and the last digit against a hand computation:
lines kept from an expired batch and from a cancelled one are billed; a duplicate provider
batch's lines are billed too, apart, as waste. The real steps, the real `openai` SDK over HTTP
to the fake Batch API (each line reports the usage its `[usage:P,C,K,R]` marker names), a
real database on either engine, one manual clock."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tests.integration.daemon_harness import (
    MODEL,
    batches,
    drive,
    enqueue,
    items,
    make_config,
    make_context,
)
from tracker.actions import request_cancel
from tracker.config import TrackerConfig
from tracker.costs import cost_report
from tracker.daemon import run_steps_once
from tracker.enqueue import enqueue_stream
from tracker.pricing import PriceBook
from tracker.store.reader import engine_snapshot
from tracker.store.reports import results_of
from tracker.testing.fake_openai import FakeOpenAI, Fault, ManualClock

#: Batch prices of the test's model, dollars per million tokens.
PRICES = {"input": 0.15, "cached_input": 0.075, "output": 0.6}

#: (prompt, completion, cached, reasoning) each line reports.
USAGE = {
    "e1": (1000, 200, 0, 0), "e2": (2500, 800, 1024, 300), "e3": (7, 3, 0, 0),
    "c1": (123456, 7890, 100000, 4000), "c2": (1, 1, 1, 1),
    "c3": (900, 900, 0, 0), "c4": (900, 900, 0, 0),  # cancelled before they ran: not billed
    "d1": (500, 50, 0, 10), "d2": (333, 77, 128, 0),
}

# By hand, in millionths of a dollar: (prompt - cached) x 0.15 + cached x 0.075 + completion x 0.6
#   e1: 1000 x 0.15 + 200 x 0.6                          =    270
#   e2: 1476 x 0.15 + 1024 x 0.075 + 800 x 0.6          =    778.2
#   e3: 7 x 0.15 + 3 x 0.6                               =      2.85
#   c1: 23456 x 0.15 + 100000 x 0.075 + 7890 x 0.6      =  15752.4
#   c2: 0 x 0.15 + 1 x 0.075 + 1 x 0.6                  =      0.675
#   d1: 500 x 0.15 + 50 x 0.6                            =    105
#   d2: 205 x 0.15 + 128 x 0.075 + 77 x 0.6             =     86.55
# expiring 1051.05, cancelling 15753.075, dupe 191.55; waste: the duplicate's lines that ran
EXPECTED_BY_JOB = {"cancelling": "0.015753075", "dupe": "0.00019155",
                   "expiring": "0.00105105"}
EXPECTED_RESULTS = "0.016995675"
WASTE_BY_LINE = {"d1": "0.000105", "d2": "0.00008655"}


def _marked(ids: list[str], extra: str = "") -> dict[str, str]:
    return {i: f"question {i} [usage:{','.join(map(str, USAGE[i]))}]{extra}" for i in ids}


def _report(engine: Engine, prices: PriceBook, by: str) -> dict[str, Any]:
    with engine_snapshot(engine) as reader:
        return cost_report(reader, prices, by=by)


def test_ledger__exact_to_the_token_and_digit_with_expired_cancelled_and_duplicate_batches(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    config = make_config(max_prompts=10, provider={"list_lag_grace": 5.0},
                         prices_per_million=PRICES)
    prices = PriceBook(config)
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=10.0,
                    cancelling_seconds=1.0, completion_window_seconds=30.0) as server:
        ctx = make_context(engine, server, clock, tmp_path, config)

        # Expired: e4 never finishes, so the batch expires with e1..e3 done (billed).
        enqueue(ctx, {**_marked(["e1", "e2", "e3"]), "e4": "never ends [slow]"},
                job="expiring")
        drive(ctx, clock)
        assert "expired" in {b.provider_status for b in batches(ctx)}

        # Cancelled: c1 and c2 have run when the cancel comes; c3 and c4 have not.
        enqueue(ctx, _marked(["c1", "c2", "c3", "c4"]), job="cancelling")
        run_steps_once(ctx)
        clock.advance(1.0 + 5.5)  # validating, then 2 of 4 lines (one every 2.5 s)
        cancelling = next(b for b in batches(ctx) if b.job == "cancelling")
        request_cancel(ctx, cancelling.id, all_open=False)
        drive(ctx, clock)

        # Duplicate: the first create's answer is lost and the list shows it only after the
        # grace, so a second provider batch runs the same lines; the first is found later,
        # too late to cancel before its lines ran.
        server.list_lag_seconds = 20.0
        server.state.in_progress_seconds = 30.0  # the ghost runs d1 before it is listed
        server.state.completion_window_seconds = 1000.0
        server.add_fault(Fault(method="POST", path="/v1/batches", kind="drop_after", times=1))
        enqueue(ctx, _marked(["d1", "d2"]), job="dupe")
        drive(ctx, clock)
        duplicates = [b for b in batches(ctx) if b.duplicate_of is not None]
        assert len(duplicates) == 1
        wasted = sorted(custom_id for batch_id, custom_id, outcome in server.executions
                        if outcome == "success" and batch_id == duplicates[0].provider_batch_id)
    assert 1 <= len(wasted) <= 2, wasted  # ran before it was found and cancelled
    expected_waste = sum(Decimal(WASTE_BY_LINE[i]) for i in wasted)
    expected_total = Decimal(EXPECTED_RESULTS) + expected_waste

    stored = items(ctx)
    assert {i: stored[i].status for i in ("e4", "c3", "c4")} == {
        "e4": "failed", "c3": "cancelled", "c4": "cancelled"}

    by_job = _report(engine, prices, "job")
    assert Decimal(by_job["total_usd"]) == expected_total
    assert round(expected_total, 2) == Decimal("0.02")  # to the cent
    assert by_job["results_usd"] == EXPECTED_RESULTS
    assert Decimal(by_job["waste_usd"]) == expected_waste
    assert {r["key"]: r["usd"] for r in by_job["rows"] if r["kind"] == "result"} == (
        EXPECTED_BY_JOB)
    waste = [r for r in by_job["rows"] if r["kind"] == "waste"]
    assert [(r["key"], Decimal(r["usd"]), r["items"]) for r in waste] == [
        ("dupe", expected_waste, len(wasted))]

    by_model = _report(engine, prices, "model")
    result_row = next(r for r in by_model["rows"] if r["kind"] == "result")
    assert result_row == {
        "key": MODEL, "kind": "result", "usd": EXPECTED_RESULTS, "items": 7,
        "prompt_tokens": 1000 + 2500 + 7 + 123456 + 1 + 500 + 333,
        "cached_tokens": 1024 + 100000 + 1 + 128,
        "completion_tokens": 200 + 800 + 3 + 7890 + 1 + 50 + 77,
        "reasoning_tokens": 300 + 4000 + 1 + 10}
    assert Decimal(by_model["total_usd"]) == expected_total

    by_batch = _report(engine, prices, "batch")
    assert sum(r["items"] for r in by_batch["rows"]) == 7 + len(wasted)
    assert Decimal(_report(engine, prices, "day")["total_usd"]) == expected_total

    with engine_snapshot(engine) as reader:
        costs = {r["id"]: r["cost_usd"] for r in results_of(reader, prices=prices)}
    assert costs["c1"] == "0.0157524"
    assert costs["c2"] == "0.000000675"
    assert costs["e4"] is None and costs["c3"] is None


def test_ledger__packaged_prices_and_a_model_without_a_price_costs_unknown_never_zero(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    config = TrackerConfig.model_validate({"batch": {"providers": {"openai": {"models": [
        {"name": MODEL, "max_prompts_per_batch": 10},
        {"name": "house-model", "max_prompts_per_batch": 10}]}}}})
    ctx = make_context(engine, server, clock, tmp_path, config)
    for model, item_id in ((MODEL, "e1"), ("house-model", "e2")):
        line = {"id": item_id, "input_payload": {"messages": [
            {"role": "user", "content": _marked([item_id])[item_id]}]}}
        enqueue_stream(engine, io.BytesIO(json.dumps(line).encode()), "t.jsonl", config,
                       default_model=model, now=clock())
    drive(ctx, clock)
    report = _report(engine, PriceBook(config), "model")
    rows = {r["key"]: r for r in report["rows"]}
    # The packaged gpt-5-mini price: 1000 x 0.125 + 200 x 1.00 millionths.
    assert rows[MODEL]["usd"] == "0.000325"
    assert rows["house-model"]["usd"] == "unknown"
    assert rows["house-model"]["prompt_tokens"] == 2500  # the tokens are still counted
    assert (report["total_usd"], report["priced_usd"]) == ("unknown", "0.000325")
    assert report["unpriced_models"] == ["openai/house-model"]
