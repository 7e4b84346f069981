"""The daemon's steps end to end, in-process: real SDK over HTTP to the fake Batch API, a real
SQLite file, and one manual clock shared by the tracker and the server (nothing sleeps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from sqlalchemy import Engine

from tests.integration.daemon_harness import (
    MODEL,
    batches,
    drive,
    enqueue,
    history,
    items,
    items_by_status,
    make_config,
    make_context,
)
from tracker.actions import request_cancel, retry_items
from tracker.context import Context
from tracker.daemon import run_steps_once
from tracker.store.reports import status_report
from tracker.testing.fake_openai import FakeOpenAI, Fault, ManualClock


def _sdk(server: FakeOpenAI) -> OpenAI:
    return OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)


def _created_batches(server: FakeOpenAI) -> list[Any]:
    return [server.get_batch(batch_id) for batch_id in server.batches]


def test_steps__happy_path(ctx: Context, server: FakeOpenAI, clock: ManualClock) -> None:
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(7)})
    drive(ctx, clock)
    stored = items(ctx)
    assert {i.status for i in stored.values()} == {"succeeded"}
    assert stored["q3"].output_text == "echo: question 3"
    assert stored["q3"].attempts == 1
    assert stored["q3"].prompt_tokens and stored["q3"].completion_tokens
    assert sorted(b.item_count for b in batches(ctx)) == [1, 3, 3]
    assert {b.status for b in batches(ctx)} == {"ingested"}
    assert len(server.batches) == 3
    assert [h[1] for h in history(ctx, "q3")] == ["queued", "in_batch", "succeeded"]
    first = batches(ctx)[0]
    assert [h[1] for h in history(ctx, first.id)] == [
        "pending", "submitted", "in_progress", "completed", "ingested"]


def test_steps__line_failures(ctx: Context, server: FakeOpenAI, clock: ManualClock) -> None:
    enqueue(ctx, {"ok": "fine", "bad": "broken [fail:400]", "flaky": "again [fail-once:500]",
                  "down": "never [fail:500]"})
    drive(ctx, clock)
    stored = items(ctx)
    assert stored["ok"].status == "succeeded"
    assert (stored["bad"].status, stored["bad"].attempts, stored["bad"].error_status) == (
        "failed", 1, 400)
    assert stored["bad"].error_message
    assert (stored["flaky"].status, stored["flaky"].attempts) == ("succeeded", 2)
    assert (stored["down"].status, stored["down"].attempts) == ("failed", 3)
    assert "gave up after 3 attempts" in history(ctx, "down")[-1][2]


def test_steps__expired_batch(engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=2.0,
                    completion_window_seconds=20.0) as server:
        ctx = make_context(engine, server, clock, tmp_path)
        enqueue(ctx, {"fast": "quick", "slow": "takes forever [slow]"})
        drive(ctx, clock)
        stored = items(ctx)
        assert stored["fast"].status == "succeeded"
        assert (stored["slow"].status, stored["slow"].attempts) == ("failed", 3)
        assert stored["slow"].error_code == "batch_expired"
        assert {b.provider_status for b in batches(ctx)} == {"expired"}


def test_steps__validation_failure(ctx: Context, server: FakeOpenAI, clock: ManualClock) -> None:
    enqueue(ctx, {"a": "one", "b": "two [invalid]", "c": "three"})
    drive(ctx, clock)
    stored = items(ctx)
    assert stored["b"].status == "failed"
    assert stored["b"].attempts == 1
    # the innocent lines were sent twice, but the refused send used no attempt
    for item_id in ("a", "c"):
        assert (stored[item_id].status, stored[item_id].attempts,
                stored[item_id].free_attempts) == ("succeeded", 2, 1)
    assert batches(ctx)[0].provider_status == "failed"


def test_steps__lost_create_answer_is_adopted(ctx: Context, server: FakeOpenAI,
                                              clock: ManualClock) -> None:
    server.add_fault(Fault(method="POST", path="/v1/batches", kind="drop_after", times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    drive(ctx, clock)
    assert len(server.batches) == 1  # the ghost was adopted, not created again
    assert items_by_status(ctx) == {"succeeded": 3}
    reasons = [h[2] for h in history(ctx, batches(ctx)[0].id)]
    assert any("adopted" in (r or "") for r in reasons)


def test_steps__duplicate_provider_batches(ctx: Context, server: FakeOpenAI,
                                           clock: ManualClock) -> None:
    server.add_fault(Fault(method="POST", path="/v1/batches", kind="drop_after", times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    run_steps_once(ctx)  # pack, upload, create (answer lost)
    local = batches(ctx)[0]
    assert local.create_attempted_at is not None and local.provider_batch_id is None
    clock.advance(1)
    # another create with the same local id reaches the provider (e.g. a retry elsewhere)
    _sdk(server).batches.create(input_file_id=local.input_file_id, endpoint=local.endpoint,
                                completion_window="24h", metadata={"tracker_batch_id": local.id})
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 3}
    provider_side = _created_batches(server)
    assert len(provider_side) == 2
    assert sorted(b["status"] for b in provider_side) in (["cancelled", "completed"],
                                                          ["completed", "expired"])
    rows = batches(ctx)
    duplicate = [b for b in rows if b.duplicate_of == local.id]
    assert len(duplicate) == 1 and duplicate[0].status == "ingested"
    kept = next(b for b in rows if b.id == local.id)
    assert kept.provider_batch_id != duplicate[0].provider_batch_id
    for item in items(ctx).values():
        assert item.batch_id == local.id


def test_steps__tracker_cancel(ctx: Context, server: FakeOpenAI, clock: ManualClock,
                               engine: Engine, tmp_path: Path) -> None:
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    for _ in range(2):  # pack and submit, then poll into in_progress
        run_steps_once(ctx)
        clock.advance(1)
    batch = batches(ctx)[0]
    assert batch.status == "in_progress"
    request_cancel(ctx, batch.provider_batch_id, all_open=False)
    drive(ctx, clock)
    stored = items(ctx)
    statuses = {i.status for i in stored.values()}
    assert statuses <= {"succeeded", "cancelled"} and "cancelled" in statuses
    cancelled = [i for i in stored.values() if i.status == "cancelled"]
    assert all("tracker cancel" in history(ctx, i.id)[-1][2] for i in cancelled)
    assert retry_items(engine, clock(), failed=False, cancelled=True) == len(cancelled)
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 3}
    for item in cancelled:  # sent twice; the send before the retry no longer counts
        assert (items(ctx)[item.id].attempts, items(ctx)[item.id].free_attempts) == (2, 1)


def test_steps__cancelled_outside_tracker(ctx: Context, server: FakeOpenAI,
                                          clock: ManualClock) -> None:
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(2)})
    for _ in range(2):
        run_steps_once(ctx)
        clock.advance(0.5)
    _sdk(server).batches.cancel(batches(ctx)[0].provider_batch_id)
    drive(ctx, clock)
    stored = items(ctx)
    assert {i.status for i in stored.values()} == {"cancelled"}
    assert all("outside the tracker" in history(ctx, i)[-1][2] for i in stored)


def test_steps__truncated_download_is_fetched_again(ctx: Context, server: FakeOpenAI,
                                                    clock: ManualClock) -> None:
    server.add_fault(Fault(method="GET", path="/v1/files/*/content", kind="truncate", times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 3}
    assert all(i.attempts == 1 for i in items(ctx).values())
    assert len(server.batches) == 1


def test_steps__download_corrupt_in_the_middle__nothing_stored_from_it_and_fetched_again(
        ctx: Context, server: FakeOpenAI, clock: ManualClock) -> None:
    """A download is checked by its line count and last line only (each line is parsed once,
    at ingest): a bad line in the middle rolls the ingest back and the file comes again."""
    server.add_fault(Fault(method="GET", path="/v1/files/*/content", kind="garble", times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 3}
    assert all(i.attempts == 1 for i in items(ctx).values())
    assert server.fault_counts["garble"] == 1
    assert server.count_requests("GET", "/v1/files/*/content") == 2
    assert len(server.batches) == 1
    assert all(json.loads(i.output_data)["custom_id"] == i.id for i in items(ctx).values())


def test_steps__vanished_batch_is_cancelled_then_requeued(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path,
                       make_config(provider={"not_found_grace": 30.0}))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(2)})
    run_steps_once(ctx)
    first = batches(ctx)[0]
    server.batches.pop(first.provider_batch_id)
    for _ in range(20):  # inside the grace period a 404 is a delay
        run_steps_once(ctx)
        clock.advance(1.0)
    assert items_by_status(ctx) == {"in_batch": 2}
    assert "404" in (batches(ctx)[0].last_error or "")
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 2}
    assert server.count_requests("POST", f"/v1/batches/{first.provider_batch_id}/cancel") == 1
    assert any("vanished" in (h[2] or "") for h in history(ctx, first.id))


def test_steps__quota_pauses_then_resumes(ctx: Context, server: FakeOpenAI,
                                          clock: ManualClock) -> None:
    server.add_fault(Fault(method="POST", path="/v1/batches", kind="http_error", status=429,
                           code="insufficient_quota", times=1))
    enqueue(ctx, {"q": "question"})
    run_steps_once(ctx)
    report = status_report(ctx.engine, clock())
    assert report["paused_providers"] and "quota" in report["paused_providers"][0]["reason"]
    drive(ctx, clock, step=5.0)
    assert items_by_status(ctx) == {"succeeded": 1}
    assert status_report(ctx.engine, clock())["paused_providers"] == []


def test_steps__rate_limited_poll_backs_off(ctx: Context, server: FakeOpenAI,
                                            clock: ManualClock) -> None:
    enqueue(ctx, {"q": "question"})
    run_steps_once(ctx)
    server.add_fault(Fault(method="GET", path="/v1/batches/*", kind="http_error", status=429,
                           headers={"retry-after": "7"}, times=1))
    clock.advance(1)
    run_steps_once(ctx)
    batch = batches(ctx)[0]
    assert batch.failures == 1
    assert batch.next_action_at == pytest.approx(clock() + 7)
    assert "429" in batch.last_error
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 1}


def test_steps__max_prompts_per_batch(engine: Engine, server: FakeOpenAI, clock: ManualClock,
                                      tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path, make_config(max_prompts=5))
    enqueue(ctx, {f"q{i:02d}": f"question {i}" for i in range(12)})
    drive(ctx, clock)
    assert sorted(b.item_count for b in batches(ctx)) == [2, 5, 5]
    for batch_id in server.batches:
        assert len(server.batch_custom_ids(batch_id)) <= 5
    assert all(b.model == MODEL for b in batches(ctx))


def test_steps__ghost_that_reconcile_missed_is_swept(ctx: Context, server: FakeOpenAI,
                                                     clock: ManualClock) -> None:
    server.add_fault(Fault(method="POST", path="/v1/batches", kind="drop_after", times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    run_steps_once(ctx)  # the create's answer is lost; the ghost exists
    ghost = next(iter(server.batches))
    real_list = server.state.list_batches
    server.state.list_batches = lambda: []  # type: ignore[method-assign]
    clock.advance(61)  # past list_lag_grace (default 60 s)
    run_steps_once(ctx)  # reconcile still sees nothing (the list lags), so it creates again
    server.state.list_batches = real_list  # type: ignore[method-assign]
    local = batches(ctx)[0]
    assert local.create_attempts == 2 and local.provider_batch_id != ghost
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 3}
    duplicate = [b for b in batches(ctx) if b.duplicate_of == local.id]
    assert [b.provider_batch_id for b in duplicate] == [ghost]
    assert duplicate[0].status == "ingested"
    assert server.get_batch(ghost)["status"] in ("cancelled", "completed")
    assert all(i.batch_id == local.id for i in items(ctx).values())
