"""A batch's files at the provider are deleted once it is ingested (`delete_files:
after_ingest`, the default), kept with `never`; a failing delete is tried again later and holds
nothing up. The real steps in-process, the real `openai` SDK over HTTP to the fake Batch API,
a real database on either engine, one manual clock."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tests.integration.daemon_harness import batches, drive, enqueue, items_by_status, make_config
from tracker.context import Context
from tracker.daemon import is_idle, run_steps_once
from tracker.steps.delete_files import FIRST_RETRY
from tracker.store import file_deletions
from tracker.store.engine import read, write
from tracker.store.reports import status_report
from tracker.testing.fake_openai import FakeOpenAI, Fault, ManualClock


def _deletions(ctx: Context) -> list[Any]:
    with read(ctx.engine) as conn:
        return list(conn.execute(text(
            "SELECT file_id, kind, attempts, last_error, deleted_at FROM file_deletions "
            "ORDER BY kind, file_id")))


def _batch_files(ctx: Context) -> dict[str, str]:
    """kind -> file id, over every batch."""
    found = {}
    for batch in batches(ctx):
        for kind in ("input", "output", "error"):
            file_id = getattr(batch, f"{kind}_file_id")
            if file_id:
                found[file_id] = kind
    return found


def test_after_ingest__input_output_and_error_files_are_deleted(
        ctx: Context, server: FakeOpenAI, clock: ManualClock) -> None:
    enqueue(ctx, {"a": "hello", "b": "no [fail:400]", "c": "again"})
    drive(ctx, clock)
    assert items_by_status(ctx) == {"succeeded": 2, "failed": 1}
    files = _batch_files(ctx)
    assert sorted(files.values()) == ["error", "input", "output"]
    assert not set(files) & set(server.state.files)  # gone at the provider
    rows = _deletions(ctx)
    assert {(r.file_id, r.kind) for r in rows} == set(files.items())
    assert all(r.deleted_at is not None and r.last_error is None for r in rows)
    assert server.count_requests("DELETE", "/v1/files/*") == 3


def test_a_file_already_gone__counts_as_deleted(ctx: Context, server: FakeOpenAI,
                                               clock: ManualClock) -> None:
    server.add_fault(Fault(method="DELETE", path="/v1/files/*", status=404, times=1))
    enqueue(ctx, {"a": "hello"})
    drive(ctx, clock)
    rows = _deletions(ctx)
    assert len(rows) == 2 and all(r.deleted_at is not None for r in rows)
    assert [r.last_error for r in rows if r.last_error] == ["already gone (404)"]


def test_never__the_files_stay(engine: Any, server: FakeOpenAI, clock: ManualClock,
                               ctx: Context) -> None:
    ctx.config = make_config(provider={"delete_files": "never"})
    enqueue(ctx, {"a": "hello"})
    drive(ctx, clock)
    assert set(_batch_files(ctx)) <= set(server.state.files)
    assert _deletions(ctx) == []
    assert server.count_requests("DELETE", "/v1/files/*") == 0


def test_a_failing_delete__is_tried_again_later_and_holds_nothing_up(
        ctx: Context, server: FakeOpenAI, clock: ManualClock) -> None:
    server.add_fault(Fault(method="DELETE", path="/v1/files/*", status=503, times=None))
    enqueue(ctx, {"a": "hello", "b": "world"})
    drive(ctx, clock)  # idle: the results are stored; the deletes wait for their next try
    assert items_by_status(ctx) == {"succeeded": 2}
    rows = _deletions(ctx)
    assert len(rows) == 2
    assert all(r.deleted_at is None and r.attempts == 1 and r.last_error for r in rows)
    files = status_report(ctx.engine, clock())["provider_files_to_delete"]
    assert files["pending"] == 2 and files["failing"] == 2 and files["last_error"]
    assert is_idle(ctx)
    tried = server.count_requests("DELETE", "/v1/files/*")
    run_steps_once(ctx)  # not due yet: no call
    assert server.count_requests("DELETE", "/v1/files/*") == tried
    server.clear_faults()
    clock.advance(FIRST_RETRY + 1)
    assert not is_idle(ctx)
    run_steps_once(ctx)
    assert all(r.deleted_at is not None for r in _deletions(ctx))
    assert not set(_batch_files(ctx)) & set(server.state.files)


def test_an_input_file_two_batches_were_created_from__waits_for_both(engine: Any) -> None:
    """A create retried after a lost answer can make a twin from the same input file; the
    file is deleted only once neither batch still needs it."""
    with write(engine) as conn:
        for batch_id, status in (("tb_first", "completed"), ("tb_twin", "completed")):
            conn.execute(text(
                "INSERT INTO batches (id, provider, model, endpoint, status, item_count, "
                "input_file_id, output_file_id, created_at, updated_at) VALUES (:id, "
                "'openai', 'gpt-5-mini', '/v1/chat/completions', :status, 0, 'file-shared', "
                ":out, 1, 1)"), {"id": batch_id, "status": status, "out": f"file-{batch_id}"})
        conn.execute(text("UPDATE batches SET status = 'ingested' WHERE id = 'tb_first'"))
        file_deletions.schedule_batch_files(conn, "tb_first", 2.0)
    assert _scheduled(engine) == [("file-tb_first", "output")]  # the twin still runs
    with write(engine) as conn:
        conn.execute(text("UPDATE batches SET status = 'ingested' WHERE id = 'tb_twin'"))
        file_deletions.schedule_batch_files(conn, "tb_twin", 3.0, ("file-tb_twin", "file-err"))
    assert _scheduled(engine) == [("file-err", "error"), ("file-shared", "input"),
                                  ("file-tb_first", "output"), ("file-tb_twin", "output")]


def _scheduled(engine: Any) -> list[tuple[str, str]]:
    with read(engine) as conn:
        return [tuple(row) for row in conn.execute(text(
            "SELECT file_id, kind FROM file_deletions ORDER BY file_id"))]
