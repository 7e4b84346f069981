"""Provider limits: enqueued-token cap, token_limit_exceeded, batches per hour, lost files."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from tests.integration.daemon_harness import (
    batches,
    drive,
    enqueue,
    history,
    items,
    items_by_status,
    make_config,
    make_context,
)
from tracker.daemon import run_steps_once
from tracker.providers.openai import OpenAIBatchProvider
from tracker.steps import pack
from tracker.store.engine import write
from tracker.store.reports import status_report
from tracker.testing.fake_openai import FakeOpenAI, Fault, ManualClock


def test_token_cap__limits_tokens_in_flight(engine: Engine, server: FakeOpenAI,
                                            clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path,
                       make_config(max_prompts=10, max_enqueued_tokens=60))
    enqueue(ctx, {f"q{i}": "a question of some length " * 2 for i in range(8)})
    per_item = items(ctx)["q0"].est_tokens
    pack(ctx)
    pack(ctx)  # nothing more while the first batch holds the tokens
    made = batches(ctx)
    assert len(made) == 1 and made[0].est_tokens <= 60
    assert made[0].item_count == 60 // per_item
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 8}
    assert all(b.est_tokens <= 60 for b in batches(ctx))


def test_token_limit_exceeded__requeued_after_backoff(engine: Engine, clock: ManualClock,
                                                      tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=30.0,
                    enqueued_token_limit=40) as server:
        ctx = make_context(engine, server, clock, tmp_path, make_config(max_prompts=2))
        enqueue(ctx, {f"q{i}": f"question number {i} with words" for i in range(4)})
        drive(ctx, clock, step=2.0)
        assert items_by_status(ctx) == {"succeeded": 4}
        refused = [b for b in batches(ctx) if b.provider_status == "failed"]
        assert refused and "token_limit_exceeded" in refused[0].batch_errors
        requeued = [h for i in items(ctx) for h in history(ctx, i) if "Enqueued token" in
                    (h[2] or "")]
        assert requeued
        stored = items(ctx).values()
        assert {i.attempts - i.free_attempts for i in stored} == {1}  # refusals were free
        assert max(i.attempts for i in stored) >= 2  # ...though they were sent again


def test_batches_per_hour__packing_stops_at_the_limit(engine: Engine, server: FakeOpenAI,
                                                      clock: ManualClock,
                                                      tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path)
    enqueue(ctx, {"q": "question"})
    with write(engine) as conn:
        conn.execute(text(
            "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n "
            "WHERE value < :n) INSERT INTO batches (id, provider, model, endpoint, status, "
            "item_count, created_at, updated_at) SELECT 'old' || value, 'openai', "
            "'gpt-5-mini', 'x', 'pending', 0, :t, :t FROM n"),
            {"t": clock() - 10, "n": OpenAIBatchProvider.max_batches_per_hour})
    assert pack(ctx) == 0
    clock.advance(3600)
    assert pack(ctx) == 1


def test_output_file_404_once__waited_for_not_requeued(engine: Engine, server: FakeOpenAI,
                                                       clock: ManualClock,
                                                       tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path)
    enqueue(ctx, {"q": "question"})
    server.add_fault(Fault(method="GET", path="/v1/files/*/content", status=404,
                           message="No such File object: file-gone", times=1))
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 1}
    assert items(ctx)["q"].attempts == 1  # one 404 is a delay: the line ran once
    assert [e for e in server.executions if e[1] == "q"] == [
        (batches(ctx)[0].provider_batch_id, "q", "success")]


def test_output_file_gone_past_grace__items_requeued(engine: Engine, server: FakeOpenAI,
                                                     clock: ManualClock,
                                                     tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path,
                       make_config(provider={"not_found_grace": 20.0}))
    enqueue(ctx, {"q": "question"})
    server.add_fault(Fault(method="GET", path="/v1/files/*/content", status=404,
                           message="No such File object: file-gone", times=None))
    for _ in range(15):
        run_steps_once(ctx)
        clock.advance(1.0)
    assert items_by_status(ctx) == {"in_batch": 1}  # still waiting inside the grace period
    first = batches(ctx)[0]
    clock.advance(10.0)
    run_steps_once(ctx)  # past the grace: the output never came, its line counts as missing
    server.clear_faults()
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 1}
    assert items(ctx)["q"].attempts == 2
    assert any("never came" in (h[2] or "") for h in history(ctx, first.id))


def test_unknown_provider_status__polled_again(engine: Engine, server: FakeOpenAI,
                                               clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path)
    enqueue(ctx, {"q": "question"})
    run_steps_once(ctx)
    record = next(iter(server.batches.values()))
    clock.advance(1.5)
    record.status = "weird_new_status"  # the provider invents a status
    real_refresh = server.state.refresh
    server.state.refresh = lambda b: None  # type: ignore[method-assign]
    run_steps_once(ctx)
    assert batches(ctx)[0].provider_status == "weird_new_status"
    assert batches(ctx)[0].status == "in_progress"
    report = status_report(ctx.engine, clock())
    assert "unknown provider status 'weird_new_status'" in report["batch_errors"][0]["last_error"]
    server.state.refresh = real_refresh  # type: ignore[method-assign]
    record.status = "in_progress"
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 1}


def test_download_refused_401__results_kept_not_rerun(engine: Engine, server: FakeOpenAI,
                                                      clock: ManualClock,
                                                      tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path)
    enqueue(ctx, {"q": "question"})
    server.add_fault(Fault(method="GET", path="/v1/files/*/content", status=401,
                           code="invalid_api_key", message="Incorrect API key provided.",
                           times=1))
    drive(ctx, clock, step=5.0)
    assert items_by_status(ctx) == {"succeeded": 1}
    assert items(ctx)["q"].attempts == 1  # the results were waited for, not paid for twice
    assert len(server.batches) == 1


def test_input_file_gone_before_validation__retried_with_an_attempt(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path)
    enqueue(ctx, {"q": "question"})
    run_steps_once(ctx)
    server.files.pop(batches(ctx)[0].input_file_id)
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 1}
    assert items(ctx)["q"].attempts == 2  # a batch-wide refusal uses an attempt
    assert "Cannot find file" in history(ctx, "q")[2][2]
