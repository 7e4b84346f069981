"""Crash safety: `tracker run` as a real process, killed with SIGKILL at named crash points and
at random moments, then restarted. The fake server counts what it receives."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.integration.daemon_kinds import ANTHROPIC, FINAL, KINDS, OPENAI, DaemonKind
from tracker.store.engine import make_engine, read
from tracker.testing.fake_http import FakeHttpServer, Fault

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kind() -> DaemonKind:
    """The provider kind of the daemon and the fake; tests parametrize it over `KINDS`."""
    return OPENAI


@pytest.fixture
def server(kind: DaemonKind) -> Iterator[Any]:
    with kind.make_fake() as fake:
        yield fake


class Tracker:
    """Runs the `tracker` CLI against one database and one fake server."""

    def __init__(self, tmp_path: Path, server: FakeHttpServer, max_prompts: int,
                 list_lag_grace: float = 1.0, db_url: str | None = None,
                 kind: DaemonKind = OPENAI) -> None:
        self.kind = kind
        self.db_url = db_url or f"sqlite:///{tmp_path / 'tracker.db'}"
        self._engine: Engine | None = None
        config = tmp_path / "llm_config.yaml"
        config.write_text(kind.config_yaml(server.base_url, max_prompts, list_lag_grace))
        # The daemons run this checkout's `tracker`, whatever the environment's install is.
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, **kind.env(server.base_url), "TRACKER_CONFIG": str(config),
                    "TRACKER_DB": self.db_url, "PYTHONPATH": pythonpath}
        for variable in ("TRACKER_CRASH_AT", "TRACKER_PAUSE_AT", "ANTHROPIC_BASE_URL"):
            self.env.pop(variable, None)
        self.cwd = tmp_path
        self.log = tmp_path / "daemon.log"

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run([sys.executable, "-m", "tracker", *args], env=self.env,
                              cwd=self.cwd, input=stdin, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def enqueue(self, n: int) -> None:
        self.enqueue_items({f"item-{i:04d}": f"question {i}" for i in range(n)})

    def enqueue_items(self, contents: dict[str, str]) -> None:
        lines = "".join(json.dumps({"id": item_id, "input_payload": {
            "messages": [{"role": "user", "content": content}]}}) + "\n"
            for item_id, content in contents.items())
        self.cli("enqueue", "-", "--model", self.kind.model, stdin=lines)

    def start(self, crash_at: str | None = None, *, pause_at: str | None = None,
              lease_ttl: float | None = None, poll_interval: float = 0.1,
              log_path: Path | None = None,
              extra_args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        env = dict(self.env)
        if crash_at:
            env["TRACKER_CRASH_AT"] = crash_at
        if pause_at:
            env["TRACKER_PAUSE_AT"] = pause_at
        extra = ["--lease-ttl", str(lease_ttl)] if lease_ttl is not None else []
        extra += extra_args
        with (log_path or self.log).open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "tracker", "run", "--until-idle", "--poll-interval",
                 str(poll_interval), *extra], env=env, cwd=self.cwd, stdout=log,
                stderr=subprocess.STDOUT)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.db_url)
        return self._engine

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with read(self.engine) as conn:
            return [tuple(row) for row in conn.execute(text(sql))]

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _wait(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"daemon did not exit within {timeout}s") from None


@contextmanager
def running(tracker: Tracker, **start: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A `tracker run` of `tracker` (`start`: `Tracker.start`'s options), killed if it is
    still running at the end; the tracker is closed."""
    proc = tracker.start(**start)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        tracker.close()


def stop_cleanly(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert _wait(proc) == 0


def _poll_until(condition, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def check_invariants(tracker: Tracker, server: Any, n: int, *,
                     paid_once: bool = False) -> dict[str, int]:
    """Every item terminal with one result, none run twice with both results kept, no
    duplicate batch left running at the provider. `paid_once`: moreover no item ran
    successfully twice at the provider at all, in any batch (nothing paid for twice)."""
    kind = tracker.kind
    statuses = dict(tracker.query("SELECT status, count(*) FROM items GROUP BY status"))
    assert statuses == {"succeeded": n}, statuses
    open_batches = tracker.query("SELECT count(*) FROM batches WHERE status <> 'ingested'")
    assert open_batches == [(0,)]
    # each item: exactly one stored outcome transition
    finishes = tracker.query(
        "SELECT entity_id, count(*) FROM transitions WHERE entity = 'item' AND "
        "to_status = 'succeeded' GROUP BY entity_id")
    assert len(finishes) == n and {c for _, c in finishes} == {1}
    # the batch each item's result came from really ran it, and no other kept batch did
    kept = dict(tracker.query(
        "SELECT provider_batch_id, id FROM batches WHERE duplicate_of IS NULL "
        "AND provider_batch_id IS NOT NULL"))
    executions = server.executions
    runs: Counter[str] = Counter()
    for batch_id, custom_id, outcome in executions:
        if outcome == kind.succeeded and batch_id in kept:
            runs[custom_id] += 1
    assert set(runs.values()) == {1} and len(runs) == n, runs.most_common(3)
    if paid_once:
        paid = Counter(custom_id for _, custom_id, outcome in executions
                       if outcome == kind.succeeded)
        assert paid == runs, (paid - runs).most_common(3)
    for item_id, provider_batch_id in tracker.query(
            "SELECT i.id, b.provider_batch_id FROM items i JOIN batches b ON b.id = i.batch_id"):
        assert item_id in server.batch_custom_ids(provider_batch_id)
    # no duplicate still running, and every provider batch is accounted for locally
    for batch_id in server.batches:
        status = kind.final_status(server, batch_id)
        assert status in FINAL, (batch_id, status)
        if batch_id not in kept:
            assert status in ("cancelled", "failed", "expired") or tracker.query(
                f"SELECT 1 FROM batches WHERE provider_batch_id = '{batch_id}'")
    return statuses


def run_with_kills(tracker: Tracker, rng: random.Random, kills: int,
                   step: tuple[int, int]) -> int:
    """Start the daemon `kills` times and SIGKILL it once the audit trail has grown by a random
    number of rows in `step` (unless it finished first). Returns the kills that landed."""
    landed = 0
    for _ in range(kills):
        target = tracker.query("SELECT count(*) FROM transitions")[0][0] + rng.randint(*step)
        proc = tracker.start()
        try:
            _poll_until(lambda t=target, p=proc: tracker.query(
                "SELECT count(*) FROM transitions")[0][0] >= t or p.poll() is not None,
                timeout=120)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                landed += 1
            proc.wait()
    return landed


#: Which crash points each kind is killed at (the ones it never reaches are skipped with the
#: reason): openai every point; anthropic all but after_upload (its requests go inline in the
#: create). before_create_call: the create was not sent, its intent is committed;
#: after_create: it was sent and made the batch, whose id was never stored.
CRASH_CASES = [case for kind in KINDS for case in kind.crash_points()]


@pytest.mark.parametrize(("kind", "point"), CRASH_CASES)
def test_crash_point__restart_finishes_everything(kind: DaemonKind, point: str, server: Any,
                                                  tmp_path: Path, db_url: str) -> None:
    n = 30
    tracker = Tracker(tmp_path, server, max_prompts=10, db_url=db_url, kind=kind)
    tracker.enqueue(n)
    proc = tracker.start(crash_at=point)
    assert _wait(proc) == -signal.SIGKILL, tracker.log.read_text()
    created_before_restart = server.count_requests("POST", kind.create_path)
    restarted_at = time.monotonic()
    proc = tracker.start()
    _poll_until(lambda: tracker.query(
        "SELECT count(*) FROM batches b JOIN workers w ON w.id = b.claimed_by "
        f"WHERE w.pid = {proc.pid}")[0][0] >= 1 or proc.poll() is not None, timeout=5)
    assert time.monotonic() - restarted_at < 5  # took the dead worker's claims at once
    assert _wait(proc) == 0, tracker.log.read_text()
    check_invariants(tracker, server, n, paid_once=True)
    log = tracker.log.read_text()
    if point == "after_create":
        assert created_before_restart == 1  # the killed create reached the provider...
        assert "adopted" in log  # ...and the restarted daemon took it, not a second one
    if point == "before_create_call":
        assert created_before_restart == 0  # killed with the intent stored, nothing sent
        assert "adopted" not in log
    assert len(server.batches) == 3
    assert server.count_requests("POST", kind.create_path) == 3  # one create per batch


def test_lost_create_then_kill_after_create__both_adopted_by_their_results(
        tmp_path: Path, db_url: str) -> None:
    """Anthropic batches carry no metadata: two rows of one size whose creates both made a
    batch that no row recorded (the first answer lost, the daemon killed right after the
    second) cannot tell the two apart by time and size. The restarted daemon must wait for
    them to end and adopt each by its results' custom ids, never create again."""
    kind, n = ANTHROPIC, 30
    # Long enough that both batches still run when the restarted daemon looks for them.
    with kind.make_fake(in_progress_seconds=4.0) as server:
        server.add_fault(Fault(method="POST", path=kind.create_path, kind="drop_after"))
        tracker = Tracker(tmp_path, server, max_prompts=10, db_url=db_url, kind=kind)
        tracker.enqueue(n)
        proc = tracker.start(crash_at="after_create")
        assert _wait(proc) == -signal.SIGKILL, tracker.log.read_text()
        assert server.count_requests("POST", kind.create_path) == 2
        assert tracker.query(
            "SELECT count(*) FROM batches WHERE create_attempted_at IS NOT NULL "
            "AND provider_batch_id IS NULL") == [(2,)]
        assert _wait(tracker.start()) == 0, tracker.log.read_text()
        check_invariants(tracker, server, n, paid_once=True)
        assert server.count_requests("POST", kind.create_path) == 3  # one create per batch
        assert len(server.batches) == 3
        adopted = tracker.query("SELECT count(*) FROM transitions WHERE entity = 'batch' "
                                "AND reason LIKE 'adopted %'")
        assert adopted == [(2,)]
        assert "may be its own or another unanswered row's" in tracker.log.read_text()


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_random_kills__nothing_lost_nothing_twice(kind: DaemonKind, server: Any,
                                                  tmp_path: Path, db_url: str) -> None:
    n, kills = 300, 8
    rng = random.Random(20261124)
    tracker = Tracker(tmp_path, server, max_prompts=25, db_url=db_url, kind=kind)
    tracker.enqueue(n)
    survived = run_with_kills(tracker, rng, kills, step=(5, 120))
    proc = tracker.start()
    assert _wait(proc, timeout=120) == 0, tracker.log.read_text()[-3000:]
    check_invariants(tracker, server, n, paid_once=True)
    assert survived >= kills // 2  # most kills landed mid-run, not after the work was done
    print(f"random kills ({kind}): {survived} SIGKILLs mid-run, {len(server.batches)} provider "
          f"batches, {server.count_requests('POST', kind.create_path)} creates sent, "
          f"{n} items all succeeded once")


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_sigterm__finishes_step_and_exits_zero_then_resumes(kind: DaemonKind, server: Any,
                                                             tmp_path: Path, db_url: str) -> None:
    tracker = Tracker(tmp_path, server, max_prompts=10, db_url=db_url, kind=kind)
    tracker.enqueue(30)
    proc = tracker.start()
    _poll_until(lambda: tracker.query(
        "SELECT count(*) FROM batches WHERE provider_batch_id IS NOT NULL")[0][0] >= 1)
    proc.send_signal(signal.SIGTERM)
    assert _wait(proc) == 0
    assert tracker.query("SELECT count(*) FROM daemon_lease WHERE expires_at > 0") == [(0,)]
    assert tracker.query("SELECT count(*) FROM workers") == [(0,)]  # claims given back
    assert tracker.query("SELECT count(*) FROM batches WHERE claimed_by IS NOT NULL") == [(0,)]
    assert _wait(tracker.start()) == 0
    check_invariants(tracker, server, 30, paid_once=True)


def test_second_daemon__is_refused(server: Any, tmp_path: Path) -> None:
    tracker = Tracker(tmp_path, server, max_prompts=10)
    tracker.enqueue(5)
    first = subprocess.Popen([sys.executable, "-m", "tracker", "run", "--poll-interval", "0.1"],
                             env=tracker.env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _poll_until(lambda: tracker.query(
            f"SELECT count(*) FROM daemon_lease WHERE pid = {first.pid}")[0][0] == 1)
        second = subprocess.run([sys.executable, "-m", "tracker", "run", "--until-idle"],
                                env=tracker.env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGTERM)
        assert _wait(first) == 0


def test_enqueue_while_running__picked_up(server: Any, tmp_path: Path,
                                         db_url: str) -> None:
    tracker = Tracker(tmp_path, server, max_prompts=10, db_url=db_url)
    tracker.enqueue_items({"first": "question one"})
    proc = subprocess.Popen([sys.executable, "-m", "tracker", "run", "--poll-interval", "0.1"],
                            env=tracker.env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _poll_until(lambda: tracker.query(
            "SELECT status FROM items WHERE id = 'first'") == [("succeeded",)])
        tracker.enqueue_items({f"later-{i}": f"question {i}" for i in range(15)})
        report = json.loads(tracker.cli("status", "--json"))
        assert [worker["pid"] for worker in report["workers"]] == [proc.pid]
        if db_url.startswith("sqlite"):
            assert report["daemon"] is not None and report["daemon"]["pid"] == proc.pid
        _poll_until(lambda: tracker.query(
            "SELECT count(*) FROM items WHERE status = 'succeeded'") == [(16,)])
    finally:
        proc.send_signal(signal.SIGINT)
        assert _wait(proc) == 0


def test_cli_cancel__running_batch_ends_cancelled(tmp_path: Path, db_url: str) -> None:
    with OPENAI.make_fake(in_progress_seconds=60.0) as slow:
        tracker = Tracker(tmp_path, slow, max_prompts=10, db_url=db_url)
        tracker.enqueue(4)
        proc = tracker.start()
        try:
            _poll_until(lambda: tracker.query(
                "SELECT count(*) FROM batches WHERE status = 'in_progress'") == [(1,)])
            provider_batch_id = tracker.query("SELECT provider_batch_id FROM batches")[0][0]
            assert "cancel requested for 1 batch" in tracker.cli("cancel", provider_batch_id)
            assert _wait(proc) == 0  # --until-idle: everything ended
        finally:
            if proc.poll() is None:
                proc.kill()
        assert tracker.query("SELECT status, count(*) FROM items GROUP BY status") == [
            ("cancelled", 4)]
        assert slow.get_batch(provider_batch_id)["status"] == "cancelled"
        reasons = tracker.query("SELECT DISTINCT reason FROM transitions WHERE entity = 'item' "
                                "AND to_status = 'cancelled'")
        assert reasons == [("batch was cancelled by tracker cancel",)]
