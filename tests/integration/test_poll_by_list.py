"""Polling many open batches walks the provider's list of batches, a page per call, instead of
reading each batch: 1,000 open batches cost about 10 calls a cycle. A batch the list does not
show yet (lists lag behind creates) is read on its own, and a list that fails falls back to
reading each batch. Ingest downloads the files the stored status names without reading the
batch again.

The real steps in-process, the real `openai` SDK over HTTP to the fake Batch API, every call
counted at the server; one manual clock, nothing sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.integration.daemon_harness import (
    batches,
    drive,
    enqueue,
    items_by_status,
    make_config,
    make_context,
)
from tracker.actions import request_cancel
from tracker.context import Context
from tracker.steps import pack, poll, submit
from tracker.store import workers
from tracker.store.engine import write
from tracker.testing.fake_openai import FakeOpenAI, Fault, ManualClock


@pytest.fixture
def slow_server(clock: ManualClock) -> Iterator[FakeOpenAI]:
    """Batches that stay in progress for as long as these tests look."""
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=100_000.0) as fake:
        yield fake


def submitted(ctx: Context, count: int, prefix: str) -> None:
    """`count` one-item batches, created at the provider."""
    enqueue(ctx, {f"{prefix}{i}": f"question {i}" for i in range(count)})
    ctx.batches_per_step = count
    assert pack(ctx) == count
    assert submit(ctx) == count


def calls(server: FakeOpenAI, since: int) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in server.requests[since:]]


def test_poll__a_thousand_open_batches__a_dozen_calls_a_cycle(
        engine: Engine, slow_server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, slow_server, clock, tmp_path, make_config(max_prompts=1))
    submitted(ctx, 1000, "q")
    for cycle in range(2):
        clock.advance(60.0)  # every batch is due again
        before = len(slow_server.requests)
        assert poll(ctx) == 1000
        made = calls(slow_server, before)
        assert len(made) <= 12, made
        assert set(made) == {("GET", "/v1/batches")}, f"cycle {cycle}: {set(made)}"
        assert {b.status for b in batches(ctx)} == {"in_progress"}
        assert {b.last_seen_at for b in batches(ctx)} == {clock()}


def test_poll__batches_the_list_does_not_show_yet__are_read_on_their_own(
        engine: Engine, slow_server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, slow_server, clock, tmp_path, make_config(max_prompts=1))
    submitted(ctx, 30, "old")
    clock.advance(100.0)
    submitted(ctx, 5, "new")
    slow_server.list_lag_seconds = 50.0  # the 5 new batches are not listed yet
    clock.advance(10.0)
    before = len(slow_server.requests)
    assert poll(ctx) == 35
    made = calls(slow_server, before)
    assert made.count(("GET", "/v1/batches")) == 1
    new_ids = {b.provider_batch_id for b in batches(ctx)[30:]}
    assert sorted(path for method, path in made if path != "/v1/batches") == sorted(
        f"/v1/batches/{batch_id}" for batch_id in new_ids)
    assert {b.last_seen_at for b in batches(ctx)} == {clock()}


def test_poll__the_list_fails__each_batch_is_read(
        engine: Engine, slow_server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, slow_server, clock, tmp_path, make_config(max_prompts=1))
    submitted(ctx, 5, "q")
    clock.advance(10.0)
    slow_server.add_fault(Fault(method="GET", path="/v1/batches", status=500, times=None))
    before = len(slow_server.requests)
    assert poll(ctx) == 5
    made = calls(slow_server, before)
    assert made.count(("GET", "/v1/batches")) == 1  # the SDK does not retry: max_retries 0
    assert len([path for _, path in made if path.startswith("/v1/batches/")]) == 5
    assert {b.status for b in batches(ctx)} == {"in_progress"}


def test_poll__an_ended_batch_seen_in_the_list__moves_on(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=5.0,
                    finalizing_seconds=1.0) as server:
        ctx = make_context(engine, server, clock, tmp_path, make_config(max_prompts=1))
        submitted(ctx, 3, "q")
        clock.advance(60.0)
        before = len(server.requests)
        assert poll(ctx) == 3
        assert set(calls(server, before)) == {("GET", "/v1/batches")}
        assert {b.status for b in batches(ctx)} == {"completed"}


def test_poll__no_api_key_and_a_cancel_wanted__the_step_goes_on_each_batch_keeps_the_error(
        engine: Engine, slow_server: FakeOpenAI, clock: ManualClock, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_context(engine, slow_server, clock, tmp_path, make_config(max_prompts=1))
    submitted(ctx, 3, "q")
    request_cancel(ctx, batches(ctx)[0].provider_batch_id, all_open=False)
    ctx.providers.clear()  # built again from the config, which names no key...
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # ...and the environment has none
    clock.advance(10.0)
    assert poll(ctx) == 3  # no exception: one bad provider does not stop the step
    assert all("API key" in (b.last_error or "") for b in batches(ctx))


def test_poll__the_list_fails_for_many__a_step_reads_at_most_its_share(
        engine: Engine, slow_server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, slow_server, clock, tmp_path, make_config(max_prompts=1))
    submitted(ctx, 30, "q")
    ctx.batches_per_step = 10
    clock.advance(10.0)
    slow_server.add_fault(Fault(method="GET", path="/v1/batches", status=429, times=None))
    for run in range(3):
        before = len(slow_server.requests)
        assert poll(ctx) == 10
        reads = [p for _, p in calls(slow_server, before) if p.startswith("/v1/batches/")]
        assert len(reads) == 10, f"run {run}"
    assert {b.last_seen_at for b in batches(ctx)} == {clock()}  # all read after three runs


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_poll__many_listed_statuses_beside_the_heartbeat__no_deadlock(
        engine: Engine, slow_server: FakeOpenAI, clock: ManualClock, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Storing listed statuses locks many batch rows in one transaction, as the heartbeat
    renewing the worker's claims does: both lock them in id order, so neither waits on the
    other in a cycle (PostgreSQL would kill one as a deadlock)."""
    ctx = make_context(engine, slow_server, clock, tmp_path, make_config(max_prompts=1))
    ctx.worker = workers.register(engine, None, 30.0)
    submitted(ctx, 200, "q")
    failures: list[str] = []
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.is_set():
            try:
                workers.heartbeat(engine, ctx.worker, None, 30.0)
            except Exception as exc:
                failures.append(repr(exc.__cause__ or exc))

    beating = threading.Thread(target=heartbeat)
    beating.start()
    try:
        for _ in range(3):
            clock.advance(1000.0)
            with write(engine) as conn:  # due order differs from id order (locked in it)
                conn.execute(text("UPDATE batches SET next_action_at = :t - random() * 50 "
                                  "WHERE id IN (SELECT id FROM batches ORDER BY id FOR UPDATE)"),
                             {"t": clock()})
            assert poll(ctx) == 200
    finally:
        stop.set()
        beating.join()
    assert failures == []
    assert "Deadlock" not in caplog.text
    assert {b.last_seen_at for b in batches(ctx)} == {clock()}


def test_ingest__files_the_poll_stored__the_batch_is_not_read_again(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path, make_config(max_prompts=2))
    enqueue(ctx, {"a": "one", "b": "two", "bad": "three [fail:400]"})
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 2, "failed": 1}
    assert {b.error_file_id is not None for b in batches(ctx)} == {True, False}
    reads = [path for method, path in calls(server, 0)
             if method == "GET" and path.startswith("/v1/batches/")]
    assert reads == []  # the list showed each batch ended, with its files
