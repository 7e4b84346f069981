"""Many `tracker run` workers on one PostgreSQL database: real processes share the batches, a
SIGKILLed worker's claims are taken over, and a worker SIGSTOPped past its lease writes nothing
when it comes back. The fake Batch API counts every provider batch and every paid line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.test_crash import Tracker, _poll_until, _wait
from tests.integration.test_paused_daemon import _stopped
from tracker import states
from tracker.providers.openai import OpenAIBatchProvider
from tracker.testing.fake_openai import FakeOpenAI

on_postgresql = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
LEASE_TTL = 1.0


def _chains_intact(tracker: Tracker, entity: str) -> None:
    """Every row's history starts at its creation, each move starts where the last one ended,
    is an allowed move, and ends at the row's current status."""
    table = "items" if entity == "item" else "batches"
    current = dict(tracker.query(f"SELECT id, status FROM {table}"))
    rows = tracker.query("SELECT entity_id, from_status, to_status FROM transitions "
                         f"WHERE entity = '{entity}' ORDER BY id")
    allowed = states.allowed_pairs(entity)
    last: dict[str, str] = {}
    for entity_id, frm, to in rows:
        if entity_id not in last:
            assert frm is None, (entity_id, frm, to)
        else:
            assert frm == last[entity_id] and (frm, to) in allowed, (entity_id, frm, to)
        last[entity_id] = to
    assert last == current


@on_postgresql
def test_three_workers__one_killed_one_paused__every_item_once(tmp_path: Path,
                                                               db_url: str) -> None:
    n = 5000
    with FakeOpenAI(validating_seconds=0.1, in_progress_seconds=0.3,
                    finalizing_seconds=0.1) as server:
        tracker = Tracker(tmp_path, server, max_prompts=100, db_url=db_url)
        tracker.enqueue(n)
        logs = {name: tmp_path / f"{name}.log" for name in ("steady", "killed", "paused")}
        steady = tracker.start(lease_ttl=LEASE_TTL, log_path=logs["steady"])
        killed = tracker.start(lease_ttl=LEASE_TTL, log_path=logs["killed"])
        paused = tracker.start(pause_at="after_upload:2", lease_ttl=LEASE_TTL,
                               log_path=logs["paused"])
        procs = (steady, killed, paused)
        try:
            # The one to kill dies mid-run, holding claims, once it has done some work (its
            # steps run side by side, so it may hold claims before it has logged any).
            _poll_until(lambda: "batch tb_" in logs["killed"].read_text() and tracker.query(
                "SELECT count(*) FROM batches b JOIN workers w ON w.id = b.claimed_by "
                f"WHERE w.pid = {killed.pid} AND b.status <> 'ingested'")[0][0] >= 2,
                timeout=60)
            killed.send_signal(signal.SIGKILL)
            assert killed.wait() == -signal.SIGKILL
            # The paused one stops itself after an upload, holding a claim, and stays stopped
            # until its worker row is removed (its lease ran out) and its batch taken over.
            _poll_until(lambda: _stopped(paused.pid), timeout=60)
            _poll_until(lambda: tracker.query(
                f"SELECT count(*) FROM workers WHERE pid = {paused.pid}") == [(0,)])
            paused.send_signal(signal.SIGCONT)
            assert _wait(paused) == 1, logs["paused"].read_text()[-3000:]
            assert _wait(steady, timeout=240) == 0, logs["steady"].read_text()[-3000:]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert "lost the daemon lease" in logs["paused"].read_text()

        # every item terminal, each stored once
        assert tracker.query("SELECT status, count(*) FROM items GROUP BY status") == [
            ("succeeded", n)]
        finishes = Counter(dict(tracker.query(
            "SELECT entity_id, count(*) FROM transitions WHERE entity = 'item' AND "
            "to_status = 'succeeded' GROUP BY entity_id")).values())
        assert finishes == Counter({1: n})
        # no provider batch created twice for one local batch, counted at the server
        key = OpenAIBatchProvider.metadata_key
        per_local = Counter(record.metadata[key] for record in server.batches.values()
                            if record.metadata)
        local = {row[0] for row in tracker.query(
            "SELECT id FROM batches WHERE duplicate_of IS NULL")}
        assert set(per_local) == local and set(per_local.values()) == {1}, per_local
        # each line paid once
        paid = Counter(custom_id for _, custom_id, outcome in server.executions
                       if outcome == "success")
        assert len(paid) == n and set(paid.values()) == {1}
        # every history chain intact
        _chains_intact(tracker, "item")
        _chains_intact(tracker, "batch")
        # the work really was shared and taken over
        taken_over = tracker.query("SELECT count(*) FROM batches WHERE claim_token >= 2")[0][0]
        assert taken_over >= 1
        for name in ("killed", "paused"):
            assert "batch tb_" in logs[name].read_text(), name
        print(f"3 workers, {n} items: {len(server.batches)} provider batches, "
              f"{taken_over} batch(es) taken over after the kill and the pause")


@on_postgresql
def test_second_worker__joins_and_is_listed(tmp_path: Path, db_url: str) -> None:
    with FakeOpenAI(validating_seconds=0.1, in_progress_seconds=0.3,
                    finalizing_seconds=0.1) as server:
        tracker = Tracker(tmp_path, server, max_prompts=5, db_url=db_url)
        tracker.enqueue(5)
        run = [sys.executable, "-m", "tracker", "run", "--poll-interval", "0.1"]
        procs = [subprocess.Popen(run, env=tracker.env, cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(2)]
        try:
            _poll_until(lambda: tracker.query("SELECT count(*) FROM workers") == [(2,)])
            report = json.loads(tracker.cli("status", "--json"))
            assert sorted(w["pid"] for w in report["workers"]) == sorted(p.pid for p in procs)
            assert all(w["heartbeat_age_seconds"] < 30 for w in report["workers"])
            text_report = tracker.cli("status")
            assert "workers: 2" in text_report
            _poll_until(lambda: tracker.query(
                "SELECT count(*) FROM items WHERE status = 'succeeded'") == [(5,)])
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            assert [_wait(proc) for proc in procs] == [0, 0]
        assert tracker.query("SELECT count(*) FROM workers") == [(0,)]
