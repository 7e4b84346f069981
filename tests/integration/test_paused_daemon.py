"""A daemon paused past its lease (SIGSTOP: a VM pause, a long stall) comes back after another
daemon took over. Fencing must stop it before its next write or provider call: no second
provider batch, no second ingest. Real processes, a real SQLite file or PostgreSQL database,
the fake Batch API."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.test_crash import Tracker, _poll_until, _wait, check_invariants
from tracker.testing.fake_openai import FakeOpenAI

LEASE_TTL = 1.0


def _stopped(pid: int) -> bool:
    """Whether the process is stopped by a signal (state T in /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _pause_takeover_resume(tracker: Tracker, point: str, first_log: Path) -> None:
    """Start a daemon that SIGSTOPs itself at `point`; once its lease has expired start a
    second one; when the second holds the lease, resume the first. The first must exit 1
    (lease lost), the second 0 (all done)."""
    first = tracker.start(pause_at=point, lease_ttl=LEASE_TTL, log_path=first_log)
    second = None
    try:
        _poll_until(lambda: _stopped(first.pid))
        _poll_until(lambda: tracker.query(
            f"SELECT expires_at FROM workers WHERE pid = {first.pid}")[0][0] < time.time())
        second = tracker.start(lease_ttl=LEASE_TTL)
        # The second has the first's claims once the first's worker row is gone (at once on
        # SQLite, where it takes the lease; at its next heartbeat on PostgreSQL).
        _poll_until(lambda: tracker.query(
            f"SELECT count(*) FROM workers WHERE pid = {first.pid}") == [(0,)])
        first.send_signal(signal.SIGCONT)  # both run now; the first no longer owns its work
        assert _wait(first) == 1, first_log.read_text()
        assert _wait(second) == 0, tracker.log.read_text()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "lost the daemon lease" in first_log.read_text()


@pytest.mark.parametrize("point", ["after_upload", "before_create", "before_ingest_write"])
def test_paused_daemon__resumes_after_takeover_and_writes_nothing(point: str, tmp_path: Path,
                                                                 db_url: str) -> None:
    n = 10
    with FakeOpenAI(validating_seconds=0.1, in_progress_seconds=0.5,
                    finalizing_seconds=0.1) as server:
        tracker = Tracker(tmp_path, server, max_prompts=n, list_lag_grace=0.5,
                          db_url=db_url)
        tracker.enqueue(n)
        _pause_takeover_resume(tracker, point, tmp_path / "first.log")
        check_invariants(tracker, server, n)
        assert len(server.batches) == 1  # no duplicate provider batch was created
        paid = Counter(custom_id for _, custom_id, outcome in server.executions
                       if outcome == "success")
        assert set(paid.values()) == {1} and len(paid) == n
        ingests = tracker.query("SELECT count(*) FROM transitions WHERE entity = 'batch' "
                                "AND to_status = 'ingested'")
        assert ingests == [(1,)]


def test_paused_between_lease_check_and_create__its_twin_is_adopted_or_cancelled(
        tmp_path: Path, db_url: str) -> None:
    """Paused after its last lease check, the old daemon still sends its create when it comes
    back (no check can close that window). The new daemon's reconcile adopts that batch, or
    its duplicate sweep cancels it; either way each item's result is kept once."""
    n = 10
    with FakeOpenAI(validating_seconds=0.1, in_progress_seconds=0.5,
                    finalizing_seconds=0.1) as server:
        tracker = Tracker(tmp_path, server, max_prompts=n, list_lag_grace=0.5,
                          db_url=db_url)
        tracker.enqueue(n)
        _pause_takeover_resume(tracker, "before_create_call", tmp_path / "first.log")
        check_invariants(tracker, server, n)
        duplicates = tracker.query("SELECT provider_batch_id FROM batches "
                                   "WHERE duplicate_of IS NOT NULL")
        assert len(server.batches) == 1 + len(duplicates)
        for (provider_batch_id,) in duplicates:
            assert server.get_batch(provider_batch_id)["status"] in ("cancelled", "completed")
