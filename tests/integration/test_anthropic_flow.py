"""The tracker's steps against the fake Anthropic Message Batches API: requests inline, custom
ids the API accepts joined back to any item id, and the reconcile after a lost create answer at
a provider whose batches carry no metadata (found by the provider's clock and the request
count; told apart by their results' custom ids when two unanswered rows could own one).

Real `anthropic` SDK over HTTP, real databases (both engines), one manual clock.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.integration.daemon_harness import (
    CLAUDE_MODEL,
    batches,
    drive,
    enqueue,
    history,
    items,
    items_by_status,
    make_anthropic_config,
    make_anthropic_context,
)
from tracker.actions import request_cancel
from tracker.config import TrackerConfig
from tracker.context import Context
from tracker.daemon import run_steps_once
from tracker.enqueue import enqueue_stream
from tracker.errors import InputError
from tracker.providers.anthropic import wire_custom_id
from tracker.store.engine import read
from tracker.testing.fake_anthropic import FakeAnthropic, Fault, ManualClock
from tracker.testing.fake_openai import FakeOpenAI

CREATE = "/v1/messages/batches"


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(clock=clock, in_progress_seconds=5.0) as server:
        yield server


@pytest.fixture
def ctx(engine: Engine, fake: FakeAnthropic, clock: ManualClock, tmp_path: Path) -> Context:
    return make_anthropic_context(engine, fake, clock, tmp_path)


def ran(server: FakeAnthropic) -> Counter[str]:
    """How many times each custom id ran successfully at the provider (what was paid for)."""
    return Counter(custom_id for _, custom_id, outcome in server.executions
                   if outcome == "succeeded")


def reasons(ctx: Context) -> list[str]:
    return [reason or "" for batch in batches(ctx)
            for _, _, reason in history(ctx, batch.id)]


def test_round_trip__system_translated_odd_ids_sent_as_valid_custom_ids_and_joined_back(
        ctx: Context, fake: FakeAnthropic, clock: ManualClock) -> None:
    lines = [
        {"id": "doc/1.json", "input_payload": {"messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "first [usage:40,7,10,3]"}]}},
        {"id": "plain-2", "input_payload": {"messages": [
            {"role": "user", "content": "second"}], "max_tokens": 5}},
        {"id": "ä" * 70, "input_payload": {"messages": [{"role": "user", "content": "third"}]}},
    ]
    data = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    enqueue_stream(ctx.engine, data, "in.jsonl", ctx.config, default_model=CLAUDE_MODEL,
                   now=ctx.now())
    drive(ctx, clock)

    stored = items(ctx)
    assert {i: r.status for i, r in stored.items()} == dict.fromkeys(
        ["doc/1.json", "plain-2", "ä" * 70], "succeeded")
    assert stored["doc/1.json"].output_text == "echo: first [usage:40,7,10,3]"
    assert stored["plain-2"].output_text == "echo: second"
    assert (stored["doc/1.json"].prompt_tokens, stored["doc/1.json"].cached_tokens,
            stored["doc/1.json"].completion_tokens) == (53, 10, 7)  # 40 + 10 read + 3 written
    assert stored["plain-2"].custom_id is None  # valid as it is: sent under its own id
    assert stored["doc/1.json"].custom_id == wire_custom_id("doc/1.json") != "doc/1.json"
    [provider_batch] = fake.batches
    assert sorted(fake.batch_custom_ids(provider_batch)) == sorted(
        [stored["doc/1.json"].custom_id, "plain-2", stored["ä" * 70].custom_id])
    sent = {r["custom_id"]: r["params"] for r in fake.batches[provider_batch].requests}
    first = sent[stored["doc/1.json"].custom_id]
    assert first["system"] == "Answer briefly."
    assert first["messages"] == [{"role": "user", "content": "first [usage:40,7,10,3]"}]
    assert (first["max_tokens"], sent["plain-2"]["max_tokens"]) == (64, 5)
    assert first["model"] == CLAUDE_MODEL
    [batch] = batches(ctx)
    assert batch.endpoint == "/v1/messages" and batch.provider_time_at_intent is not None


def test_lost_create__the_one_candidate_is_adopted_and_nothing_runs_twice(
        ctx: Context, fake: FakeAnthropic, clock: ManualClock) -> None:
    fake.add_fault(Fault(method="POST", path=CREATE, kind="drop_after", times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    drive(ctx, clock)
    assert len(fake.batches) == 1
    assert ran(fake) == {"q0": 1, "q1": 1, "q2": 1}
    assert items_by_status(ctx) == {"succeeded": 3}
    assert any("adopted" in reason for reason in reasons(ctx))


def test_lost_create_with_a_lagging_list__no_second_create_within_the_grace(
        ctx: Context, fake: FakeAnthropic, clock: ManualClock) -> None:
    fake.list_lag_seconds = 30.0  # under the default grace of 60 s
    fake.add_fault(Fault(method="POST", path=CREATE, kind="drop_after", times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    drive(ctx, clock)
    assert len(fake.batches) == 1
    assert ran(fake) == {"q0": 1, "q1": 1, "q2": 1}
    assert items_by_status(ctx) == {"succeeded": 3}


def test_two_rows_lose_their_creates__each_adopts_its_own_by_the_results_custom_ids(
        engine: Engine, fake: FakeAnthropic, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_anthropic_context(engine, fake, clock, tmp_path, make_anthropic_config(2))
    fake.add_fault(Fault(method="POST", path=CREATE, kind="drop_after", times=2))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(4)})
    run_steps_once(ctx)
    rows = [b for b in batches(ctx) if b.create_attempted_at is not None]
    assert len(rows) == 2 and len(fake.batches) == 2  # both made, neither answer came
    clock.advance(2.0)
    run_steps_once(ctx)
    waiting = [b.last_error or "" for b in batches(ctx)]
    assert all("may be this batch's or another's" in error for error in waiting), waiting
    drive(ctx, clock)
    assert len(fake.batches) == 2  # nothing created again
    assert ran(fake) == {f"q{i}": 1 for i in range(4)}
    assert items_by_status(ctx) == {"succeeded": 4}
    for batch in batches(ctx):
        sent = set(fake.batch_custom_ids(batch.provider_batch_id))
        assert sent == {i for i, r in items(ctx).items() if r.batch_id == batch.id}


def test_list_lag_beyond_the_grace__late_twin_cancelled_before_it_runs(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeAnthropic(clock=clock, in_progress_seconds=100.0, canceling_seconds=1.0,
                       list_lag_seconds=20.0) as fake:
        ctx = make_anthropic_context(engine, fake, clock, tmp_path,
                                     make_anthropic_config(provider={"list_lag_grace": 5.0}))
        fake.add_fault(Fault(method="POST", path=CREATE, kind="drop_after", times=1))
        enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
        run_steps_once(ctx)
        [ghost] = fake.batches
        drive(ctx, clock, max_ticks=300)
        assert len(fake.batches) == 2
        assert fake.get_batch(ghost)["cancel_initiated_at"] is not None
        assert all(batch_id != ghost for batch_id, _, outcome in fake.executions
                   if outcome == "succeeded")  # cancelled before any line of it ran
        assert ran(fake) == {"q0": 1, "q1": 1, "q2": 1}
        duplicate = [b for b in batches(ctx) if b.duplicate_of is not None]
        assert [b.provider_batch_id for b in duplicate] == [ghost]


def test_an_earlier_batch_of_the_same_size_is_never_taken_for_a_lost_one(
        ctx: Context, fake: FakeAnthropic, clock: ManualClock) -> None:
    """A batch of the account made before the create (another tool's, or long ago) is not a
    candidate: the window opens at the provider's clock read before the create."""
    foreign = _create_directly(fake, ["x0", "x1", "x2"])
    clock.advance(1000.0)
    fake.add_fault(Fault(method="POST", path=CREATE, kind="drop_after", times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 3}
    assert foreign not in {b.provider_batch_id for b in batches(ctx)}
    assert ran(fake)["q0"] == 1


def _create_directly(fake: FakeAnthropic, custom_ids: list[str]) -> str:
    created: Any = _client(fake).messages.batches.create(requests=[
        {"custom_id": c, "params": {"model": CLAUDE_MODEL, "max_tokens": 5,
                                     "messages": [{"role": "user", "content": "hi"}]}}
        for c in custom_ids])
    return str(created.id)


def test_create_refused_for_one_request__that_item_fails_alone_and_the_rest_run(
        ctx: Context, fake: FakeAnthropic, clock: ManualClock) -> None:
    """The API checks each request when the batch is created and refuses the whole create
    naming the request at fault: that item fails, the batch is sent again without it."""
    lines = [{"id": f"q{i}", "input_payload": {
        "messages": [{"role": "user", "content": f"question {i}"}],
        **({"temperature": 1.5} if i == 1 else {})}} for i in range(3)]
    data = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    enqueue_stream(ctx.engine, data, "in.jsonl", ctx.config, default_model=CLAUDE_MODEL,
                   now=ctx.now())
    drive(ctx, clock)
    stored = items(ctx)
    assert {i: r.status for i, r in stored.items()} == {
        "q0": "succeeded", "q1": "failed", "q2": "succeeded"}
    assert "requests.1" in (stored["q1"].error_message or "")
    assert ran(fake) == {"q0": 1, "q2": 1}
    assert len(fake.batches) == 1


def test_results_never_downloadable__lines_sent_again_not_taken_for_cancelled(
        engine: Engine, fake: FakeAnthropic, clock: ManualClock, tmp_path: Path) -> None:
    """An ended batch is not a cancelled one: lines its results never gave are sent again."""
    ctx = make_anthropic_context(engine, fake, clock, tmp_path,
                                 make_anthropic_config(provider={"not_found_grace": 5.0}))
    fake.results_not_found_seconds = 10_000.0
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    for _ in range(100):
        if any(b.status == "ingested" for b in batches(ctx)):
            break
        run_steps_once(ctx)
        clock.advance(1.0)
    assert items_by_status(ctx) == {"queued": 3}
    fake.results_not_found_seconds = 0.0
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 3}


def test_tracker_cancel__finished_lines_kept_the_rest_cancelled(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeAnthropic(clock=clock, in_progress_seconds=10.0, canceling_seconds=1.0) as fake:
        ctx = make_anthropic_context(engine, fake, clock, tmp_path)
        enqueue(ctx, {"q0": "question 0", "q1": "question 1", "q2": "question 2 [slow]"})
        run_steps_once(ctx)
        clock.advance(8.0)  # q0 and q1 have run; q2 never ends on its own
        [batch] = batches(ctx)
        request_cancel(ctx, batch.provider_batch_id, all_open=False)
        drive(ctx, clock)
        assert {i: r.status for i, r in items(ctx).items()} == {
            "q0": "succeeded", "q1": "succeeded", "q2": "cancelled"}
        assert "tracker cancel" in (history(ctx, "q2")[-1][2] or "")
        assert fake.get_batch(batch.provider_batch_id)["cancel_initiated_at"] is not None


def test_cancelled_outside_the_tracker__unfinished_lines_cancelled(
        ctx: Context, fake: FakeAnthropic, clock: ManualClock) -> None:
    enqueue(ctx, {"q0": "question 0 [slow]", "q1": "question 1 [slow]"})
    run_steps_once(ctx)
    [batch] = batches(ctx)
    _client(fake).messages.batches.cancel(batch.provider_batch_id)
    drive(ctx, clock)
    assert {r.status for r in items(ctx).values()} == {"cancelled"}
    assert all("outside the tracker" in (history(ctx, i)[-1][2] or "") for i in ("q0", "q1"))


def _client(fake: FakeAnthropic) -> Any:
    import anthropic

    return anthropic.Anthropic(api_key="k", base_url=fake.base_url, max_retries=0)


def _side_by_side(engine: Engine, openai_fake: FakeOpenAI, fake: FakeAnthropic,
                  clock: ManualClock, tmp_path: Path, **claude_model: Any) -> Context:
    config = TrackerConfig.model_validate({"batch": {"providers": {
        "openai": {"api_key": "sk-openai-0123456789", "base_url": openai_fake.base_url,
                   "max_retries": 0, "models": [{"name": "gpt-5-mini"}]},
        "claude": {"kind": "anthropic", "api_key": "sk-ant-0123456789",
                   "base_url": fake.base_url, "max_retries": 0,
                   "models": [{"name": CLAUDE_MODEL, **claude_model}]}}}})
    return Context(engine=engine, config=config, now=clock, poll_interval=1.0,
                   work_dir=tmp_path)


def test_openai_and_anthropic_side_by_side__each_line_to_its_provider(
        engine: Engine, server: FakeOpenAI, fake: FakeAnthropic, clock: ManualClock,
        tmp_path: Path) -> None:
    ctx = _side_by_side(engine, server, fake, clock, tmp_path, max_tokens=32)
    lines = [{"id": "o1", "input_payload": {"messages": [{"role": "user", "content": "hi"}]}},
             {"id": "a1", "provider": "claude", "model": CLAUDE_MODEL,
              "input_payload": {"messages": [{"role": "user", "content": "hello"}]}}]
    data = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    enqueue_stream(ctx.engine, data, "mixed.jsonl", ctx.config, default_model="gpt-5-mini",
                   now=ctx.now())
    drive(ctx, clock)
    stored = items(ctx)
    assert {i: (r.status, r.provider, r.output_text) for i, r in stored.items()} == {
        "o1": ("succeeded", "openai", "echo: hi"), "a1": ("succeeded", "claude", "echo: hello")}
    assert ran(fake) == {"a1": 1} and len(server.batches) == 1


def test_enqueue_for_anthropic_without_max_tokens__refused_naming_the_line_and_field(
        engine: Engine, server: FakeOpenAI, fake: FakeAnthropic, clock: ManualClock,
        tmp_path: Path) -> None:
    ctx = _side_by_side(engine, server, fake, clock, tmp_path)  # no max_tokens default
    lines = [{"id": "a0", "input_payload": {"messages": [{"role": "user", "content": "x"}],
                                            "max_tokens": 5}},
             {"id": "a1", "input_payload": {"messages": [{"role": "user", "content": "y"}]}}]
    data = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    with pytest.raises(InputError) as caught:
        enqueue_stream(ctx.engine, data, "claude.jsonl", ctx.config, provider="claude",
                       default_model=CLAUDE_MODEL, now=ctx.now())
    assert str(caught.value).startswith("claude.jsonl:2: field 'input_payload.max_tokens'")
    assert items(ctx) == {}  # nothing half-written


def test_twin_of_a_running_row_and_another_rows_lost_create__never_mistaken_for_each_other(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    """Row A loses its create and the list lags past the grace: A creates again and runs, its
    twin still unlisted. Row B, of the same size, then loses its create. Each unrecorded
    batch could be A's twin or B's: neither is adopted nor cancelled until it ends and its
    results' custom ids tell. B gets its own batch; A's twin is a duplicate (its lines waste)."""
    with FakeAnthropic(clock=clock, in_progress_seconds=100.0, canceling_seconds=1.0,
                       list_lag_seconds=20.0) as fake:
        ctx = make_anthropic_context(engine, fake, clock, tmp_path,
                                     make_anthropic_config(provider={"list_lag_grace": 5.0}))
        fake.add_fault(Fault(method="POST", path=CREATE, kind="drop_after", times=1))
        enqueue(ctx, {f"a{i}": f"question a{i}" for i in range(3)})
        run_steps_once(ctx)
        [twin] = fake.batches
        for _ in range(10):  # the grace passes: A creates again and runs
            run_steps_once(ctx)
            clock.advance(1.0)
        [row_a] = batches(ctx)
        assert row_a.provider_batch_id not in (None, twin) and row_a.create_attempts == 2
        clock.advance(6.0)
        fake.add_fault(Fault(method="POST", path=CREATE, kind="drop_after", times=1))
        enqueue(ctx, {f"b{i}": f"question b{i}" for i in range(3)})
        run_steps_once(ctx)
        [own] = [b for b in fake.batches if b not in (twin, row_a.provider_batch_id)]
        drive(ctx, clock, max_ticks=600)
        rows = {b.provider_batch_id: b for b in batches(ctx)}
        assert rows[own].duplicate_of is None and rows[own].id != row_a.id
        assert rows[twin].duplicate_of == row_a.id
        assert len(fake.batches) == 3  # B never created again
        assert ran(fake) == {**{f"b{i}": 1 for i in range(3)}, **{f"a{i}": 2 for i in range(3)}}
        assert items_by_status(ctx) == {"succeeded": 6}
        assert _waste_lines(ctx) == 3  # the twin ran to its end: billed, recorded as waste


def test_twin_found_after_it_ended__its_lines_are_recorded_as_waste(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeAnthropic(clock=clock, in_progress_seconds=30.0, list_lag_seconds=31.0) as fake:
        ctx = make_anthropic_context(engine, fake, clock, tmp_path,
                                     make_anthropic_config(provider={"list_lag_grace": 5.0}))
        fake.add_fault(Fault(method="POST", path=CREATE, kind="drop_after", times=1))
        enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
        run_steps_once(ctx)
        [twin] = fake.batches
        drive(ctx, clock, max_ticks=900)
        assert ran(fake) == {"q0": 2, "q1": 2, "q2": 2}  # the twin ran before it was listed
        assert [b.provider_batch_id for b in batches(ctx) if b.duplicate_of] == [twin]
        assert _waste_lines(ctx) == 3


def _waste_lines(ctx: Context) -> int:
    with read(ctx.engine) as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM usage_ledger WHERE kind = 'waste'")).scalar_one())


def test_create_refused_for_a_reason_every_request_shares__not_failed_item_by_item(
        engine: Engine, fake: FakeAnthropic, clock: ManualClock, tmp_path: Path) -> None:
    """Each refusal names one request, but the same refusal three times in a row means all
    share it: the batch is refused, instead of one create of the whole batch per item."""
    ctx = make_anthropic_context(engine, fake, clock, tmp_path, make_anthropic_config(10))
    lines = [{"id": f"q{i}", "input_payload": {
        "messages": [{"role": "user", "content": f"question {i}"}], "temperature": 1.5}}
        for i in range(10)]
    data = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    enqueue_stream(ctx.engine, data, "in.jsonl", ctx.config, default_model=CLAUDE_MODEL,
                   now=ctx.now())
    drive(ctx, clock, max_ticks=2000)
    assert items_by_status(ctx) == {"failed": 10}
    assert fake.count_requests("POST", CREATE) <= 3 * 3  # three tries a pass, three passes
    assert fake.batches == {}


def test_rate_limited_create__not_counted_so_a_neighbours_lost_create_is_adopted_at_once(
        engine: Engine, fake: FakeAnthropic, clock: ManualClock, tmp_path: Path) -> None:
    """A create refused with 429 made no batch: it does not count as an attempt, so the row
    is no rival to a same-size row whose create answer is lost next (adopted at once, not
    left undecided until its batch ends)."""
    ctx = make_anthropic_context(engine, fake, clock, tmp_path, make_anthropic_config(3))
    fake.add_fault(Fault(method="POST", path=CREATE, kind="http_error", status=429,
                         headers={"retry-after": "0"}, times=1))
    enqueue(ctx, {f"a{i}": f"question a{i}" for i in range(3)})
    for _ in range(3):
        run_steps_once(ctx)
        clock.advance(1.0)
    [first] = batches(ctx)
    assert first.provider_batch_id is not None and first.create_attempts == 1
    fake.add_fault(Fault(method="POST", path=CREATE, kind="drop_after", times=1))
    enqueue(ctx, {f"b{i}": f"question b{i}" for i in range(3)})
    run_steps_once(ctx)
    clock.advance(1.0)
    run_steps_once(ctx)
    second = next(b for b in batches(ctx) if b.id != first.id)
    assert second.provider_batch_id is not None  # adopted while its batch still runs
    assert any("adopted" in (reason or "") for _, _, reason in history(ctx, second.id))
    drive(ctx, clock)
    assert ran(fake) == {f"{p}{i}": 1 for p in "ab" for i in range(3)}
