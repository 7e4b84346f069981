"""Workers' claims on batches, in process on one manual clock: two workers never hold the same
batch, a claim whose worker stopped heartbeating is taken over with a new token, and the old
holder's next write or provider call about that batch is refused (fencing)."""

from __future__ import annotations

import threading
import time
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
from tracker.context import Context
from tracker.errors import ClaimLost, LeaseLost
from tracker.states import BatchStatus
from tracker.steps import pack, submit
from tracker.steps.failures import isolated
from tracker.steps.submit import _submit_guarded
from tracker.store import workers
from tracker.store.reports import status_report
from tracker.testing.fake_openai import FakeOpenAI, ManualClock

TTL = 5.0
PENDING = frozenset({BatchStatus.PENDING})


def _worker(engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path,
            max_prompts: int = 1) -> Context:
    ctx = make_context(engine, server, clock, tmp_path, make_config(max_prompts=max_prompts))
    ctx.worker = workers.register(engine, clock(), TTL)
    ctx.worker_ttl = TTL
    ctx.batches_per_step = 3
    return ctx


def test_two_workers__never_hold_the_same_batch(engine: Engine, server: FakeOpenAI,
                                                clock: ManualClock, tmp_path: Path) -> None:
    a = _worker(engine, server, clock, tmp_path)
    b = _worker(engine, server, clock, tmp_path)
    enqueue(a, {f"q{i}": f"question {i}" for i in range(6)})
    assert pack(a) == 3 and pack(b) == 3
    # one call claims a worker's share (3 due per step, 2 live workers: 2), the next tops up
    assert len(a.claim_due(PENDING, "created_at")) == 2
    assert len(b.claim_due(PENDING, "created_at")) == 2
    mine_a = {row.id for row in a.claim_due(PENDING, "created_at")}
    mine_b = {row.id for row in b.claim_due(PENDING, "created_at")}
    assert len(mine_a) == 3 and len(mine_b) == 3 and not mine_a & mine_b
    assert {row.id for row in a.claim_due(PENDING, "created_at")} == mine_a  # kept
    report = status_report(engine, clock())
    assert sorted(w["claimed_batches"] for w in report["workers"]) == [3, 3]


def test_claim_taken_over_after_expiry__old_holder_sends_and_writes_nothing(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    a = _worker(engine, server, clock, tmp_path, max_prompts=5)
    b = _worker(engine, server, clock, tmp_path, max_prompts=5)
    enqueue(a, {f"q{i}": f"question {i}" for i in range(5)})
    pack(a)
    [held] = a.claim_due(PENDING, "created_at")
    assert b.claim_due(PENDING, "created_at") == []  # a holds it
    clock.advance(TTL + 1)  # a is paused: no heartbeat renews its claim
    [taken] = b.claim_due(PENDING, "created_at")
    assert taken.id == held.id and taken.claim_token == held.claim_token + 1
    # a comes back and goes on with the batch it read before the pause
    with isolated(a, held.id, "submit"):
        _submit_guarded(a, held)
    assert server.batches == {} and batches(a)[0].input_file_id is None  # nothing sent
    submit(b)
    assert len(server.batches) == 1
    drive(b, clock)
    assert items_by_status(b) == {"succeeded": 5}


def test_claim_lost__write_refused_in_the_same_transaction(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    a = _worker(engine, server, clock, tmp_path)
    b = _worker(engine, server, clock, tmp_path)
    enqueue(a, {"q": "question"})
    pack(a)
    [held] = a.claim_due(PENDING, "created_at")
    clock.advance(TTL + 1)
    b.claim_due(PENDING, "created_at")
    with a.handling(held.id), pytest.raises(ClaimLost), a.write():
        pytest.fail("the write must be refused before its body runs")
    with a.handling(held.id), pytest.raises(ClaimLost):
        a.provider_for_call("openai")


def test_worker_removed_after_its_lease__must_stop(engine: Engine, server: FakeOpenAI,
                                                   clock: ManualClock, tmp_path: Path) -> None:
    a = _worker(engine, server, clock, tmp_path)
    b = _worker(engine, server, clock, tmp_path)
    clock.advance(TTL + 1)
    assert workers.heartbeat(engine, b.worker, clock(), TTL)  # type: ignore[arg-type]
    assert not workers.heartbeat(engine, a.worker, clock(), TTL)  # type: ignore[arg-type]
    with pytest.raises(LeaseLost), a.write():
        pytest.fail("a removed worker writes nothing")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_claim__skips_rows_another_transaction_has_locked(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    a = _worker(engine, server, clock, tmp_path)
    enqueue(a, {"q0": "zero", "q1": "one"})
    pack(a)
    locked, free = [row.id for row in batches(a)]
    claimed: list[str] = []
    with engine.connect() as other, other.begin():
        other.execute(text("SELECT id FROM batches WHERE id = :id FOR UPDATE"), {"id": locked})
        claimer = threading.Thread(target=lambda: claimed.extend(
            row.id for row in a.claim_due(PENDING, "created_at")))
        claimer.start()
        claimer.join(timeout=10)
        assert not claimer.is_alive(), "the claim waited for the locked row"
    assert claimed == [free]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_claim__not_taken_while_its_holder_is_writing(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    """The fence a write checks stays true until the write commits: a worker paused inside
    its write transaction past its claim keeps the batch until the server ends that
    transaction, and another worker's claim passes it by meanwhile."""
    a = _worker(engine, server, clock, tmp_path)
    b = _worker(engine, server, clock, tmp_path)
    enqueue(a, {"q": "question"})
    pack(a)
    [held] = a.claim_due(PENDING, "created_at")
    claimed: list[str] = []
    with a.handling(held.id), a.write():
        clock.advance(TTL + 1)  # a's claim has run out while its transaction is open
        claimer = threading.Thread(target=lambda: claimed.extend(
            row.id for row in b.claim_due(PENDING, "created_at")))
        claimer.start()
        claimer.join(timeout=10)
        assert not claimer.is_alive(), "the claim waited for the writing worker"
    assert claimed == []
    assert [row.id for row in b.claim_due(PENDING, "created_at")] == [held.id]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_lease_times_from_the_database_clock__a_fast_local_clock_takes_nothing_over(
        engine: Engine, server: FakeOpenAI, tmp_path: Path) -> None:
    """Workers on machines whose clocks disagree: one an hour ahead must neither remove the
    others nor take their claims. A worker that trusted its own clock would do both."""
    def worker(offset: float, from_database: bool) -> Context:
        ctx = make_context(engine, server, lambda: time.time() + offset, tmp_path,
                           make_config(max_prompts=1))
        ctx.lease_clock_from_database = from_database
        ctx.worker = workers.register(engine, None if from_database else ctx.now(), TTL)
        ctx.worker_ttl = TTL
        return ctx

    steady = worker(0.0, from_database=True)
    enqueue(steady, {"q": "question"})
    pack(steady)
    [held] = steady.claim_due(PENDING, "created_at")
    ahead = worker(3600.0, from_database=True)
    assert workers.heartbeat(engine, ahead.worker, None, TTL)  # type: ignore[arg-type]
    assert ahead.claim_due(PENDING, "created_at") == []
    with steady.handling(held.id), steady.write():
        pass  # steady still holds its row and its claim
    trusting = worker(3600.0, from_database=False)
    assert [row.id for row in trusting.claim_due(PENDING, "created_at")] == [held.id]
