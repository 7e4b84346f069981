"""The daemon's steps do not wait for each other: while one batch's ingest is stuck on a slow
download, another batch is still polled; and a step that leaves work for another runs it at
once, not at its next tick. A real `tracker run` process, the real SDK over HTTP to the fake
Batch API."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.test_crash import Tracker, _poll_until, running, stop_cleanly
from tracker.testing.fake_openai import FakeOpenAI, Fault

HELD_SECONDS = 20.0


def _polls(server: FakeOpenAI) -> int:
    return server.count_requests("GET", "/v1/batches/*") + server.count_requests(
        "GET", "/v1/batches")


def _download_answered(server: FakeOpenAI) -> bool:
    return any(method == "GET" and path.endswith("/content") and status is not None
               for method, path, status in server.requests)


def test_long_ingest__other_batches_are_still_polled(tmp_path: Path, db_url: str) -> None:
    with FakeOpenAI(validating_seconds=0.1, in_progress_seconds=0.3,
                    finalizing_seconds=0.1) as server:
        server.add_fault(Fault(method="GET", path="/v1/files/*/content", kind="delay",
                               delay_seconds=HELD_SECONDS))
        tracker = Tracker(tmp_path, server, max_prompts=1, db_url=db_url)
        tracker.enqueue_items({"quick": "answered at once", "long": "never ends [slow]"})
        with running(tracker) as proc:
            # The quick batch's ingest is waiting for its download.
            _poll_until(lambda: server.fault_counts["delay"] == 1, timeout=60)
            polls = _polls(server)
            # Meanwhile the poll step goes on reading the batch that is still running.
            _poll_until(lambda: _polls(server) >= polls + 3, timeout=HELD_SECONDS / 2)
            assert not _download_answered(server)  # the ingest was still waiting all along
            _poll_until(lambda: tracker.query(
                "SELECT status FROM items WHERE id = 'quick'") == [("succeeded",)],
                timeout=HELD_SECONDS + 30)
            stop_cleanly(proc)


def test_hand_off__batches_are_packed_and_submitted_one_after_another_within_a_tick(
        tmp_path: Path, db_url: str) -> None:
    """At a 30 s poll interval the steps tick every 5 s. Pack makes one batch and hands it to
    submit, which hands back to pack once it has claimed it: three batches are created well
    within one tick of the worker's start, where ticks alone would take two or more."""
    with FakeOpenAI(validating_seconds=3600) as server:
        tracker = Tracker(tmp_path, server, max_prompts=1, db_url=db_url)
        tracker.enqueue_items({"a": "first", "b": "second", "c": "third"})
        with running(tracker, poll_interval=30) as proc:
            _poll_until(lambda: tracker.query("SELECT count(*) FROM workers") == [(1,)],
                        timeout=60)
            started = time.monotonic()
            _poll_until(lambda: tracker.query(
                "SELECT count(*) FROM batches WHERE status = 'submitted'") == [(3,)], timeout=60)
            assert time.monotonic() - started < 4.0
            assert server.count_requests("POST", "/v1/batches") == 3
            stop_cleanly(proc)
