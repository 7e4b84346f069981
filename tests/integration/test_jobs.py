"""Jobs: a batch holds the items of one job, and a job is cancelled or retried alone. The real
steps in-process, the real `openai` SDK over HTTP to the fake Batch API, a real database on
either engine, one manual clock."""

from __future__ import annotations

from sqlalchemy import Engine

from tests.integration.daemon_harness import (
    batches,
    drive,
    enqueue,
    history,
    items,
    make_config,
)
from tracker.actions import cancel_queued, request_cancel, retry_items
from tracker.context import Context
from tracker.daemon import run_steps_once
from tracker.testing.fake_openai import FakeOpenAI, ManualClock


def test_pack__a_batch_holds_the_items_of_one_job(ctx: Context, server: FakeOpenAI,
                                                  clock: ManualClock) -> None:
    ctx.config = make_config(max_prompts=10)
    enqueue(ctx, {"a1": "one", "a2": "two", "a3": "three"}, job="alpha")
    enqueue(ctx, {"b1": "one", "b2": "two"}, job="beta")
    drive(ctx, clock)
    stored = items(ctx)
    by_batch = {b.id: (b.job, sorted(i for i, item in stored.items() if item.batch_id == b.id))
                for b in batches(ctx)}
    assert sorted(by_batch.values()) == [("alpha", ["a1", "a2", "a3"]), ("beta", ["b1", "b2"])]
    assert {item.status for item in stored.values()} == {"succeeded"}


def test_cancel_job__its_batches_and_queued_items_only_then_retry_it(
        ctx: Context, server: FakeOpenAI, clock: ManualClock, engine: Engine) -> None:
    ctx.config = make_config(max_prompts=10)
    enqueue(ctx, {"a1": "one", "a2": "two"}, job="alpha")
    enqueue(ctx, {"b1": "one"}, job="beta")
    run_steps_once(ctx)  # both jobs' batches packed and submitted
    enqueue(ctx, {"a3": "late"}, job="alpha")  # still queued at the cancel
    marked = request_cancel(ctx, None, True, job="alpha")
    assert [b.job for b in batches(ctx) if b.id in marked] == ["alpha"]
    assert cancel_queued(engine, "alpha", clock()) == 1
    assert "tracker cancel --job alpha" in history(ctx, "a3")[-1][2]
    drive(ctx, clock)
    assert {k: v.status for k, v in items(ctx).items()} == {
        "a1": "cancelled", "a2": "cancelled", "a3": "cancelled", "b1": "succeeded"}
    assert retry_items(engine, clock(), failed=False, cancelled=True, job="beta") == 0
    assert retry_items(engine, clock(), failed=False, cancelled=True, job="alpha") == 3
    drive(ctx, clock)
    assert {item.status for item in items(ctx).values()} == {"succeeded"}
