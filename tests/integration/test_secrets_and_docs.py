"""The API key never reaches the database, the log or `status`; the README's SQL runs."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_crash import Tracker, _poll_until, _wait
from tracker.testing.fake_openai import FakeOpenAI, Fault

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-proj-VERYSECRETkey0123456789abcdef"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(validating_seconds=0.1, in_progress_seconds=0.2) as fake:
        yield fake


def test_api_key__never_stored_logged_or_shown(server: FakeOpenAI, tmp_path: Path) -> None:
    tracker = Tracker(tmp_path, server, max_prompts=5)
    tracker.env["OPENAI_API_KEY"] = SECRET
    tracker.enqueue(3)
    # the provider echoes the key it was given in its error, as OpenAI's 401 does
    server.add_fault(Fault(method="POST", path="/v1/batches", status=401, code="invalid_api_key",
                           message=f"Incorrect API key provided: {SECRET}.", times=None))
    proc = tracker.start()
    try:
        _poll_until(lambda: tracker.query(
            "SELECT count(*) FROM provider_state WHERE paused_reason IS NOT NULL")[0][0] == 1)
        status = tracker.cli("status")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert _wait(proc) == 0
    assert "PAUSED openai" in status and "Incorrect API key" in status
    leaks = [path.name for path in tmp_path.iterdir()
             if path.is_file() and SECRET.encode() in path.read_bytes()]
    assert leaks == []
    assert "VERYSECRET" not in status + tracker.log.read_text()
    with sqlite3.connect(tracker.db) as conn:
        dump = "\n".join(conn.iterdump())
    assert "VERYSECRET" not in dump


def _readme_queries() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Auditing with SQL", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def test_readme_audit_queries__run_on_a_real_database(server: FakeOpenAI,
                                                      tmp_path: Path) -> None:
    tracker = Tracker(tmp_path, server, max_prompts=5)
    tracker.enqueue(7)
    assert _wait(tracker.start()) == 0
    queries = _readme_queries()
    assert len(queries) >= 5
    with sqlite3.connect(tracker.db) as conn:
        for query in queries:
            conn.execute(query.replace("sample-007", "item-0003")).fetchall()
        history = conn.execute(
            _readme_queries()[1].replace("sample-007", "item-0003")).fetchall()
    assert [row[2] for row in history] == ["queued", "in_batch", "succeeded"]


def test_demo__runs_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tracker.testing.demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "sample-001   succeeded" in done.stdout
    assert "sample-007   succeeded      2" in done.stdout  # retried after a transient 500
    assert "sample-008   failed" in done.stdout
