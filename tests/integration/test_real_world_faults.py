"""The guarantees against providers that behave the way real ones are reported to: files that
arrive after the status, 404s right after create, a list that lags, a local clock that is
wrong, poison lines and items, a failed batch with no errors, a cancel refused with 400, and
downloads that come back bad one file at a time.

Each test drives the real steps in-process: the real `openai` SDK over HTTP to the fake Batch
API (switched to misbehave), a real SQLite file, and one manual clock (nothing sleeps).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

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
from tracker.actions import request_cancel
from tracker.context import Context
from tracker.daemon import run_steps_once
from tracker.store.engine import write
from tracker.store.reports import status_report
from tracker.testing.fake_openai import FakeOpenAI, Fault, ManualClock


def executions(server: FakeOpenAI) -> Counter[str]:
    """How many times each item ran successfully at the provider (what was paid for)."""
    return Counter(custom_id for _, custom_id, outcome in server.executions
                   if outcome == "success")


def until(ctx: Context, clock: ManualClock, condition: Any, *, step: float = 1.0,
          max_ticks: int = 200) -> None:
    for _ in range(max_ticks):
        if condition():
            return
        run_steps_once(ctx)
        clock.advance(step)
    raise AssertionError("condition not reached")


def local_batch_statuses(ctx: Context) -> list[str]:
    return [b.status for b in batches(ctx)]


# -- 1. files arrive after the status --------------------------------------------------------


def test_late_files__completed_batch_waits_for_its_files(ctx: Context, server: FakeOpenAI,
                                                         clock: ManualClock) -> None:
    server.late_files_seconds = 30.0
    enqueue(ctx, {"a": "one", "b": "two", "bad": "three [fail:400]"})
    until(ctx, clock, lambda: local_batch_statuses(ctx) == ["completed"])
    for _ in range(5):  # the status says completed; the files are not named yet
        run_steps_once(ctx)
        clock.advance(1.0)
    assert items_by_status(ctx) == {"in_batch": 3}
    report = status_report(ctx.engine, clock())
    assert "names no output file yet" in report["batch_errors"][0]["last_error"]
    drive(ctx, clock)
    stored = items(ctx)
    assert {k: (v.status, v.attempts) for k, v in stored.items()} == {
        "a": ("succeeded", 1), "b": ("succeeded", 1), "bad": ("failed", 1)}
    assert stored["bad"].error_status == 400
    assert executions(server) == {"a": 1, "b": 1}  # nothing ran (and was paid for) twice


def test_late_files__cancelled_batch_keeps_its_finished_lines(engine: Engine,
                                                              clock: ManualClock,
                                                              tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=8.0,
                    cancelling_seconds=1.0, late_files_seconds=30.0) as server:
        ctx = make_context(engine, server, clock, tmp_path, make_config(max_prompts=4))
        enqueue(ctx, {f"q{i}": f"question {i}" for i in range(4)})
        until(ctx, clock, lambda: local_batch_statuses(ctx) == ["in_progress"])
        clock.advance(4.5)  # lines finish every 2 s of the 8 s run: two are done
        request_cancel(ctx, batches(ctx)[0].provider_batch_id, all_open=False)
        drive(ctx, clock)
        finished = set(executions(server))
        assert len(finished) == 2
        stored = items(ctx)
        assert {k for k, v in stored.items() if v.status == "succeeded"} == finished
        assert sorted(v.status for v in stored.values()) == [
            "cancelled", "cancelled", "succeeded", "succeeded"]


# -- 2. 404s during ingest and after create ---------------------------------------------------


def test_error_file_404__output_kept_and_error_file_waited_for(ctx: Context,
                                                               server: FakeOpenAI,
                                                               clock: ManualClock) -> None:
    server.file_not_found_seconds = 20.0
    server.file_not_found_kinds = frozenset({"error"})
    enqueue(ctx, {"a": "one", "b": "two", "bad": "three [fail:400]"})
    drive(ctx, clock)
    stored = items(ctx)
    assert {k: (v.status, v.attempts) for k, v in stored.items()} == {
        "a": ("succeeded", 1), "b": ("succeeded", 1), "bad": ("failed", 1)}
    assert executions(server) == {"a": 1, "b": 1}
    assert len(server.batches) == 1


def test_error_file_lost_for_good__output_stored_error_lines_sent_again(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path,
                       make_config(provider={"not_found_grace": 30.0}))
    server.file_not_found_seconds = float("inf")
    server.file_not_found_kinds = frozenset({"error"})
    enqueue(ctx, {"a": "one", "b": "two", "flaky": "three [fail-once:500]"})
    drive(ctx, clock)
    stored = items(ctx)
    assert {k: (v.status, v.attempts) for k, v in stored.items()} == {
        "a": ("succeeded", 1), "b": ("succeeded", 1), "flaky": ("succeeded", 2)}
    assert executions(server) == {"a": 1, "b": 1, "flaky": 1}
    first = batches(ctx)[0]
    assert any("never came" in (reason or "") for _, _, reason in history(ctx, first.id))


def test_batch_404_right_after_create__is_a_delay(ctx: Context, server: FakeOpenAI,
                                                  clock: ManualClock) -> None:
    server.batch_not_found_seconds = 10.0
    enqueue(ctx, {"a": "one", "b": "two"})
    drive(ctx, clock)
    assert {k: (v.status, v.attempts) for k, v in items(ctx).items()} == {
        "a": ("succeeded", 1), "b": ("succeeded", 1)}
    assert len(server.batches) == 1
    assert executions(server) == {"a": 1, "b": 1}


# -- 4. reconcile against a list that lags and a wrong local clock ----------------------------


def test_list_lag__lost_create_is_adopted_not_sent_again(ctx: Context, server: FakeOpenAI,
                                                         clock: ManualClock) -> None:
    server.list_lag_seconds = 5.0
    server.add_fault(Fault(method="POST", path="/v1/batches", kind="drop_after", times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    drive(ctx, clock)
    assert len(server.batches) == 1  # waited for the list instead of creating again
    assert executions(server) == {"q0": 1, "q1": 1, "q2": 1}
    assert items_by_status(ctx) == {"succeeded": 3}


def test_local_clock_11_minutes_fast__reconcile_still_finds_the_ghost(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path)
    ctx.now = lambda: clock() + 660.0
    server.add_fault(Fault(method="POST", path="/v1/batches", kind="drop_after", times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    drive(ctx, clock)
    assert len(server.batches) == 1
    assert executions(server) == {"q0": 1, "q1": 1, "q2": 1}


def test_list_lag_beyond_the_grace__late_duplicate_cancelled_before_it_runs(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=100.0,
                    cancelling_seconds=1.0, list_lag_seconds=20.0) as server:
        ctx = make_context(engine, server, clock, tmp_path,
                           make_config(provider={"list_lag_grace": 5.0}))
        server.add_fault(Fault(method="POST", path="/v1/batches", kind="drop_after", times=1))
        enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
        run_steps_once(ctx)
        ghost = next(iter(server.batches))
        drive(ctx, clock, max_ticks=300)
        assert len(server.batches) == 2
        assert server.get_batch(ghost)["status"] == "cancelled"
        assert all(batch_id != ghost for batch_id, _, outcome in server.executions
                   if outcome == "success")  # cancelled before any line of it ran
        assert executions(server) == {"q0": 1, "q1": 1, "q2": 1}
        duplicate = [b for b in batches(ctx) if b.duplicate_of is not None]
        assert [b.provider_batch_id for b in duplicate] == [ghost]


def test_cancel_of_a_pending_batch_whose_create_was_lost__cancels_the_ghost(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=100.0,
                    cancelling_seconds=1.0, list_lag_seconds=5.0) as server:
        ctx = make_context(engine, server, clock, tmp_path)
        server.add_fault(Fault(method="POST", path="/v1/batches", kind="drop_after", times=1))
        enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
        run_steps_once(ctx)
        ghost = next(iter(server.batches))
        assert local_batch_statuses(ctx) == ["pending"]
        request_cancel(ctx, batches(ctx)[0].id, all_open=False)
        drive(ctx, clock)
        assert len(server.batches) == 1
        assert server.get_batch(ghost)["status"] == "cancelled"
        assert items_by_status(ctx) == {"cancelled": 3}
        assert executions(server) == Counter()


# -- 5. one bad batch never blocks the others -------------------------------------------------


def test_lone_surrogate_in_output__stored_visibly_and_later_batches_go_on(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path, make_config(max_prompts=1))
    enqueue(ctx, {"a": "first [surrogate]", "b": "second", "c": "third"})
    drive(ctx, clock)
    stored = items(ctx)
    assert {v.status for v in stored.values()} == {"succeeded"}
    assert stored["a"].output_text.endswith("\ufffd")  # visibly replaced
    line = json.loads(stored["a"].output_data)  # the provider's line as it came
    body = line["response"]["body"]
    assert body["choices"][0]["message"]["content"].endswith("\ud800")  # kept without loss


def _refuse_to_ingest(conn: Connection, batch_id: str) -> None:
    """A trigger that fails the move of one batch to `ingested`, as a full disk would."""
    if conn.dialect.name == "sqlite":
        conn.execute(text(
            "CREATE TRIGGER refuse_one BEFORE UPDATE OF status ON batches "
            f"WHEN NEW.id = '{batch_id}' AND NEW.status = 'ingested' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"))
        return
    conn.execute(text(
        "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'database or disk is full'; END $$"))
    conn.execute(text(
        "CREATE TRIGGER refuse_one BEFORE UPDATE OF status ON batches FOR EACH ROW "
        f"WHEN (NEW.id = '{batch_id}' AND NEW.status = 'ingested') "
        "EXECUTE FUNCTION refuse_one()"))


def test_unexpected_error_on_one_batch__recorded_and_the_others_go_on(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path, make_config(max_prompts=1))
    enqueue(ctx, {"a": "first", "b": "second", "c": "third"})
    run_steps_once(ctx)
    stuck = batches(ctx)[0].id
    with write(engine) as conn:  # the database refuses to close this one batch
        _refuse_to_ingest(conn, stuck)
    def closed(batch_id: str) -> bool:
        return next(b for b in batches(ctx) if b.id == batch_id).status == "ingested"

    others = [b.id for b in batches(ctx) if b.id != stuck]
    until(ctx, clock, lambda: all(closed(b) for b in others), max_ticks=60)
    assert not closed(stuck)  # its item is stored (its own transaction); the close is refused
    report = status_report(ctx.engine, clock())
    errors = {e["id"]: e["last_error"] for e in report["batch_errors"]}
    assert "disk is full" in errors[stuck]
    with write(engine) as conn:
        conn.execute(text("DROP TRIGGER refuse_one"
                          + (" ON batches" if engine.dialect.name == "postgresql" else "")))
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 3}
    assert closed(stuck)
    assert next(b for b in batches(ctx) if b.id == stuck).succeeded_count == 1


# -- 6. a batch that fails with no errors ----------------------------------------------------


def test_batch_failed_without_errors__uses_attempts_and_backs_off(ctx: Context,
                                                                  server: FakeOpenAI,
                                                                  clock: ManualClock) -> None:
    enqueue(ctx, {"x": "poison [batch-fail]"})
    drive(ctx, clock)
    stored = items(ctx)["x"]
    assert (stored.status, stored.attempts) == ("failed", 3)
    assert "no error given" in stored.error_message
    assert len(server.batches) == 3
    created = sorted(b.created_at for b in batches(ctx))
    gaps = [later - earlier for earlier, later in zip(created, created[1:], strict=False)]
    assert gaps[1] > gaps[0]  # the wait grows with each attempt


# -- 7. one bad item never fails its neighbours ----------------------------------------------


def test_item_the_provider_cannot_send__fails_alone(ctx: Context, server: FakeOpenAI,
                                                    clock: ManualClock) -> None:
    enqueue(ctx, {"a": "one", "b": "two", "c": "three"})
    with write(ctx.engine) as conn:  # a row written by an older tracker, before strict JSON
        conn.execute(text("UPDATE items SET payload = '{\"messages\": [{\"role\": \"user\", "
                          "\"content\": \"two\"}], \"temperature\": NaN}' WHERE id = 'b'"))
    drive(ctx, clock)
    stored = items(ctx)
    assert {k: (v.status, v.attempts) for k, v in stored.items()} == {
        "a": ("succeeded", 1), "b": ("failed", 1), "c": ("succeeded", 1)}
    assert stored["b"].error_code == "invalid_item"
    assert "not valid JSON" in stored["b"].error_message
    assert len(server.batches) == 1


def test_non_latin_text__batches_are_sized_in_bytes(ctx: Context, server: FakeOpenAI,
                                                    clock: ManualClock) -> None:
    provider = ctx.providers["openai"]
    provider.max_bytes_per_batch = 6000  # stands in for the 200 MB limit
    # the input files are kept, to be measured below
    ctx.config = make_config(max_prompts=50, provider={"delete_files": "never"})
    text_3_bytes_a_char = "批处理" * 200  # 600 characters, 1,800 bytes
    enqueue(ctx, {f"q{i}": f"{text_3_bytes_a_char} {i}" for i in range(6)})
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 6}
    assert {v.attempts for v in items(ctx).values()} == {1}
    for batch_id in server.batches:
        record = server.state.batches[batch_id]
        assert len(server.state.files[record.input_file_id].content) <= 6000


def test_batch_over_the_size_limit__split_and_the_rest_goes_on(ctx: Context,
                                                               server: FakeOpenAI,
                                                               clock: ManualClock) -> None:
    ctx.config = make_config(max_prompts=10)
    enqueue(ctx, {f"q{i}": f"question {i} " + "x" * 500 for i in range(6)})
    from tracker.steps import pack

    assert pack(ctx) == 1  # packed under the provider's real limit
    ctx.providers["openai"].max_bytes_per_batch = 2000  # the provider refuses more
    drive(ctx, clock)
    stored = items(ctx)
    assert {v.status for v in stored.values()} == {"succeeded"}
    assert {v.attempts for v in stored.values()} == {1}  # a re-queued send was not a send
    assert len(server.batches) >= 3


# -- 8. a cancel refused with 400 ------------------------------------------------------------


def test_cancel_refused_with_400__status_read_and_results_stored(ctx: Context,
                                                                 server: FakeOpenAI,
                                                                 clock: ManualClock) -> None:
    server.cancel_refusal_status = 400
    enqueue(ctx, {"a": "one", "b": "two"})
    until(ctx, clock, lambda: local_batch_statuses(ctx) == ["submitted"])
    clock.advance(10.0)  # it completes at the provider before the daemon looks again
    provider_batch_id = batches(ctx)[0].provider_batch_id
    request_cancel(ctx, provider_batch_id, all_open=False)  # refused: 400
    drive(ctx, clock, max_ticks=30)
    assert items_by_status(ctx) == {"succeeded": 2}
    assert server.count_requests("POST", f"/v1/batches/{provider_batch_id}/cancel") <= 2
    assert batches(ctx)[0].cancel_requested == 0  # the wish is cleared once the batch ended


def test_cancel_taken__not_sent_again_while_cancelling(engine: Engine, clock: ManualClock,
                                                       tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=100.0,
                    cancelling_seconds=10.0, cancel_refusal_status=400) as server:
        ctx = make_context(engine, server, clock, tmp_path)
        enqueue(ctx, {"a": "one", "b": "two"})
        until(ctx, clock, lambda: local_batch_statuses(ctx) == ["in_progress"])
        provider_batch_id = batches(ctx)[0].provider_batch_id
        with write(engine) as conn:  # the wish only, as `tracker cancel` records it
            conn.execute(text("UPDATE batches SET cancel_requested = 1"))
        drive(ctx, clock, max_ticks=60)
        assert items_by_status(ctx) == {"cancelled": 2}
        assert server.count_requests("POST", f"/v1/batches/{provider_batch_id}/cancel") == 1


# -- 9. two files, one bad -------------------------------------------------------------------


def test_two_files_one_bad_each_try__only_the_bad_one_is_fetched_again(
        ctx: Context, server: FakeOpenAI, clock: ManualClock) -> None:
    # every second download is cut off: output fine, error cut; output cut, error fine; ...
    server.add_fault(Fault(method="GET", path="/v1/files/*/content", kind="truncate",
                           times=None, skip=1, every=2))
    enqueue(ctx, {"a": "one", "bad": "two [fail:400]"})
    drive(ctx, clock, max_ticks=60)
    stored = items(ctx)
    assert (stored["a"].status, stored["bad"].status) == ("succeeded", "failed")
    assert server.count_requests("GET", "/v1/files/*/content") == 3


# -- the edges of the above ------------------------------------------------------------------


def test_vanished_batch_that_answers_the_cancel__unfinished_lines_requeued_not_cancelled(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=100.0,
                    cancelling_seconds=1.0) as server:
        ctx = make_context(engine, server, clock, tmp_path, make_config(
            max_attempts=1, provider={"not_found_grace": 10.0}))  # the re-queue is free
        enqueue(ctx, {"a": "one", "b": "two"})
        until(ctx, clock, lambda: local_batch_statuses(ctx) == ["in_progress"])
        server.add_fault(Fault(method="GET", path="/v1/batches/batch_*", status=404,
                               message="No such Batch object", times=None))
        server.add_fault(Fault(method="POST", path="/v1/batches/*/cancel", status=503, times=1))
        until(ctx, clock, lambda: server.count_requests("POST", "/v1/batches/*/cancel") == 1,
              max_ticks=60)
        run_steps_once(ctx)
        assert local_batch_statuses(ctx) == ["in_progress"]  # the cancel got no answer yet
        until(ctx, clock, lambda: batches(ctx)[0].requeue_unfinished == 1, max_ticks=120)
        server.clear_faults()
        drive(ctx, clock, max_ticks=400)
        stored = items(ctx)
        assert {k: (v.status, v.attempts) for k, v in stored.items()} == {
            "a": ("succeeded", 2), "b": ("succeeded", 2)}
        assert all(to != "cancelled" for _, to, _ in history(ctx, "a") + history(ctx, "b"))


@pytest.mark.parametrize("fault", [
    Fault(method="POST", path="/v1/batches", kind="truncate", times=1),  # unreadable answer
    Fault(method="POST", path="/v1/batches", kind="drop_after", times=1),
])
def test_lost_create_then_a_refused_list__the_row_stays_pending_and_adopts(
        ctx: Context, server: FakeOpenAI, clock: ManualClock, fault: Fault) -> None:
    server.add_fault(fault)
    server.add_fault(Fault(method="GET", path="/v1/batches", status=404, times=1))
    enqueue(ctx, {f"q{i}": f"question {i}" for i in range(3)})
    drive(ctx, clock)
    assert len(server.batches) == 1
    assert executions(server) == {"q0": 1, "q1": 1, "q2": 1}


def test_batch_404_for_good_after_one_file_was_verified__that_file_is_stored(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = make_context(engine, server, clock, tmp_path,
                       make_config(provider={"not_found_grace": 10.0}))
    # the first download (the output file) is fine; every later one is cut off
    server.add_fault(Fault(method="GET", path="/v1/files/*/content", kind="truncate",
                           times=None, skip=1))
    enqueue(ctx, {"a": "one", "bad": "two [fail:400]"})
    until(ctx, clock, lambda: server.count_requests("GET", "/v1/files/*/content") >= 2)
    server.add_fault(Fault(method="GET", path="/v1/batches/batch_*", status=404,
                           message="No such Batch object", times=None))
    until(ctx, clock, lambda: local_batch_statuses(ctx) == ["ingested"], max_ticks=60)
    server.clear_faults()
    drive(ctx, clock)
    stored = items(ctx)
    assert (stored["a"].status, stored["a"].attempts) == ("succeeded", 1)
    assert (stored["bad"].status, stored["bad"].attempts) == ("failed", 2)
    assert executions(server) == {"a": 1}
    assert not list(tmp_path.glob("results-*"))  # kept files are removed once closed


def test_expired_batch_output_missing_its_last_line__downloaded_again(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=2.0,
                    completion_window_seconds=20.0) as server:
        ctx = make_context(engine, server, clock, tmp_path)
        server.add_fault(Fault(method="GET", path="/v1/files/*/content", kind="short",
                               times=1))
        enqueue(ctx, {"a": "one", "b": "two", "slow": "three [slow]"})
        drive(ctx, clock)
        stored = items(ctx)
        assert (stored["a"].status, stored["a"].attempts) == ("succeeded", 1)
        assert (stored["b"].status, stored["b"].attempts) == ("succeeded", 1)
        assert executions(server) == {"a": 1, "b": 1}


def test_vanished_batch_cancelled_by_the_operator_too__its_items_end_cancelled(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=100.0,
                    cancelling_seconds=1.0) as server:
        ctx = make_context(engine, server, clock, tmp_path,
                           make_config(provider={"not_found_grace": 10.0}))
        enqueue(ctx, {"a": "one", "b": "two"})
        until(ctx, clock, lambda: local_batch_statuses(ctx) == ["in_progress"])
        server.add_fault(Fault(method="GET", path="/v1/batches/batch_*", status=404,
                               message="No such Batch object", times=None))
        until(ctx, clock, lambda: batches(ctx)[0].requeue_unfinished == 1, max_ticks=120)
        request_cancel(ctx, batches(ctx)[0].provider_batch_id, all_open=False)
        server.clear_faults()
        drive(ctx, clock)
        assert items_by_status(ctx) == {"cancelled": 2}
        assert executions(server) == Counter()


def test_vanished_batch_whose_cancel_is_refused_with_400__not_given_up(
        engine: Engine, clock: ManualClock, tmp_path: Path) -> None:
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=100.0) as server:
        ctx = make_context(engine, server, clock, tmp_path,
                           make_config(provider={"not_found_grace": 10.0}))
        enqueue(ctx, {"a": "one", "b": "two"})
        until(ctx, clock, lambda: local_batch_statuses(ctx) == ["in_progress"])
        server.add_fault(Fault(method="GET", path="/v1/batches/batch_*", status=404,
                               message="No such Batch object", times=None))
        server.add_fault(Fault(method="POST", path="/v1/batches/*/cancel", status=400,
                               times=None))
        until(ctx, clock, lambda: server.count_requests("POST", "/v1/batches/*/cancel") >= 1,
              max_ticks=120)
        run_steps_once(ctx)
        assert local_batch_statuses(ctx) == ["in_progress"]
        server.clear_faults()
        drive(ctx, clock, max_ticks=400)
        assert {k: (v.status, v.attempts) for k, v in items(ctx).items()} == {
            "a": ("succeeded", 1), "b": ("succeeded", 1)}
        assert executions(server) == {"a": 1, "b": 1}


def test_create_rate_limited_then_refused__the_row_fails_and_its_items_go_on(
        ctx: Context, server: FakeOpenAI, clock: ManualClock) -> None:
    server.add_fault(Fault(method="POST", path="/v1/batches", status=429,
                           headers={"retry-after": "0"}, times=1))
    server.add_fault(Fault(method="POST", path="/v1/batches", status=400, times=1))
    enqueue(ctx, {"a": "one", "b": "two"})
    drive(ctx, clock)
    assert {k: (v.status, v.attempts) for k, v in items(ctx).items()} == {
        "a": ("succeeded", 2), "b": ("succeeded", 2)}
    assert len(server.batches) == 1


def test_model_dropped_from_the_provider_before_upload__the_row_fails_not_stuck(
        ctx: Context, server: FakeOpenAI, clock: ManualClock) -> None:
    from tracker.providers.openai import OpenAIBatchProvider

    enqueue(ctx, {"a": "one"})
    ctx.providers["openai"] = OpenAIBatchProvider({
        "api_key": "sk-test-key-0123456789", "base_url": server.base_url, "max_retries": 0,
        "models": [{"name": "gpt-4o", "mode": "chat"}]})
    drive(ctx, clock)
    stored = items(ctx)["a"]
    assert (stored.status, stored.attempts) == ("failed", 3)
    assert "not configured" in stored.error_message
    assert len(server.batches) == 0
