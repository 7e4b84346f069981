"""`make demo-workers`: the demo on PostgreSQL with 3 `tracker run` workers at once.

Which worker handles which batch is a race (the first worker to claim takes every due batch,
up to a step's worth), so the test does not ask that more than one worker did: it asks that
all 3 exited 0, that the items end as in the SQLite demo, and that every batch was submitted
once and ingested once across the workers' logs.

`demo_results` reads the demo's results table; `EXPECTED` is how the sample prompts end at each
of the demo's two providers (test_secrets_and_docs runs the SQLite demo against it too).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

on_postgresql = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
#: A row of the demo's results table: provider, id, status, tries.
RESULT_ROW = re.compile(r"^(\S+) +(\S+) +(succeeded|failed|cancelled|queued|in_batch) +(\d+)  ",
                        re.M)
#: (provider, status, tries) of every item: the sample prompts at the OpenAI fake, where
#: sample-007 fails once with a 500 and is retried and sample-008 fails with a 400, and again
#: at the Anthropic fake as claude-*, which has no fail-once marker (sample-007 succeeds at
#: once) and fails sample-008 with a 400 too.
EXPECTED = {
    **{f"sample-00{n}": ("openai", "succeeded", 1) for n in range(1, 7)},
    "sample-007": ("openai", "succeeded", 2),
    "sample-008": ("openai", "failed", 1),
    **{f"claude-sample-00{n}": ("claude", "succeeded", 1) for n in range(1, 8)},
    "claude-sample-008": ("claude", "failed", 1),
}


def demo_results(out: str) -> dict[str, tuple[str, str, int]]:
    """The demo's results table: id -> (provider, status, tries)."""
    table = out.split("$ tracker results\n", 1)[1]
    return {item: (provider, status, int(tries))
            for provider, item, status, tries in RESULT_ROW.findall(table)}


WORKER_LINE = re.compile(r"^worker (\d) \(pid \d+\): exit (\S+), submitted (\d+) batch\(es\), "
                         r"ingested (\d+)$", re.M)


@on_postgresql
def test_demo_workers__three_workers_on_postgresql(tmp_path: Path, db_url: str) -> None:
    # db_url puts the test in the PostgreSQL suite; the demo makes its own database on the
    # server TRACKER_TEST_PG_URL names.
    server_url = os.environ["TRACKER_TEST_PG_URL"]
    done = subprocess.run(
        [sys.executable, "-m", "tracker.testing.demo", "--db", server_url, "--workers", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    out = done.stdout
    assert "dropped and created the demo's own database tracker_demo" in out
    assert demo_results(out) == EXPECTED
    # 8 prompts in batches of 2 at each provider, then sample-007 again alone: 4 + 1 + 4
    assert "ingested 9\n" in out
    workers = WORKER_LINE.findall(out)
    assert [(k, code) for k, code, _, _ in workers] == [("1", "0"), ("2", "0"), ("3", "0")]
    assert sum(int(submitted) for _, _, submitted, _ in workers) == 9
    assert sum(int(ingested) for _, _, _, ingested in workers) == 9
    for k in (1, 2, 3):
        assert "started; poll interval" in (tmp_path / "demo-run" / f"worker-{k}.log").read_text()
    assert "the database is tracker_demo on" in out


def test_demo__workers_need_postgresql(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tracker.testing.demo", "--workers", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "needs a postgresql+psycopg:// --db" in done.stderr
    assert not (tmp_path / "demo-run").exists()
