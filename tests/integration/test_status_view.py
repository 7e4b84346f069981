"""The drawn `tracker status` (once and --watch) and the progress bar of `tracker enqueue`, run
as real commands on real databases; the terminal ones under a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.daemon_harness import drive, enqueue, make_config
from tests.integration.test_cli_input import _line, assert_one_line_error, run
from tracker.context import Context
from tracker.testing.fake_openai import ManualClock

WATCH_HEADING = "Ctrl-C stops"
DEADLINE_SECONDS = 60.0
#: What the terminal shows is clearer without colour; the layout is the same.
TERMINAL_ENV = {"TERM": "xterm", "COLUMNS": "100", "LINES": "50", "NO_COLOR": "1"}


def _environment(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OPENAI_API_KEY", "TRACKER_CONFIG", "TRACKER_DB", "COLUMNS")}
    return {**environment, **extra}


class Terminal:
    """The reading end of a pseudo-terminal, read by a thread into `output`."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self._output = bytearray()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        """Once the child holds the terminal: the parent's copy of its end is closed, so
        reading ends when the child's does."""
        os.close(self.slave)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every holder of the other end has closed it
                chunk = b""
            with self._changed:
                self._output += chunk
                self._changed.notify_all()
            if not chunk:
                return

    @property
    def output(self) -> str:
        with self._changed:
            return self._output.decode("utf-8", "replace")

    def wait_for(self, found: Callable[[str], bool], what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(
                    lambda: found(self._output.decode("utf-8", "replace")),
                    timeout=DEADLINE_SECONDS):
                raise AssertionError(f"no {what} within {DEADLINE_SECONDS:.0f} s: "
                                     f"{self._output[-3000:]!r}")

    def close(self) -> None:
        self._reader.join(timeout=DEADLINE_SECONDS)
        os.close(self.master)


def test_status__the_table_shows_each_job(ctx: Context, clock: ManualClock, tmp_path: Path,
                                          db_url: str) -> None:
    ctx.config = make_config(max_prompts=10)
    enqueue(ctx, {"a1": "one", "a2": "two", "a3": "three"}, job="alpha")
    enqueue(ctx, {"b1": "one", "b2": "two"}, job="beta")
    drive(ctx, clock)
    enqueue(ctx, {"g1": "one", "g2": "two"}, job="gamma")
    done = run(tmp_path, "status", db=db_url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()
            if line.split()[:1] in (["alpha"], ["beta"], ["gamma"], ["total"])}
    # model, done, then queued, in batch, succeeded (then pace and spend)
    assert {job: cells[:6] for job, cells in rows.items() if job != "total"} == {
        "alpha": ["gpt-5-mini", "████████", "100%", "0", "0", "3"],
        "beta": ["gpt-5-mini", "████████", "100%", "0", "0", "2"],
        "gamma": ["gpt-5-mini", "░░░░░░░░", "0%", "2", "0", "0"]}
    assert rows["total"][:5] == ["█████░░░", "71%", "2", "0", "5"]
    assert rows["gamma"][-2:] == ["$0.00", "-"]  # nothing spent, nothing to project from
    assert "workers: none running" in done.stdout
    only = run(tmp_path, "status", "--job", "gamma", db=db_url).stdout
    assert "gamma" in only and "alpha" not in only and "total" not in only


def test_status_json__is_still_one_json_document(tmp_path: Path) -> None:
    run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", stdin=(_line("a") + "\n").encode())
    done = run(tmp_path, "status", "--json")
    assert done.stdout.count("\n") == 1
    report = json.loads(done.stdout)
    counts = {"queued": 1, "in_batch": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert report["items"] == counts
    job = report["jobs"]["stdin"]
    assert (job["items"], job["spent_usd"], job["projected_usd"], job["eta_seconds"],
            job["budget_usd"]) == (counts, "0.00", None, None, None)
    assert job["models"]["gpt-5-mini"]["items"] == counts
    assert report["budget"] == {"limit_usd": None, "spent_usd": "0.00", "in_flight_usd": "0.00",
                                "waiting_batches": 0, "waiting": [], "jobs": {}}
    assert report["open_batches"] == []
    assert_one_line_error(run(tmp_path, "status", "--json", "--watch"), "--watch")


def test_status_watch__redraws_from_a_fresh_read_until_ctrl_c(tmp_path: Path) -> None:
    run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", "--job", "first",
        stdin=(_line("a") + "\n").encode())
    terminal = Terminal()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker", "--db", f"sqlite:///{tmp_path / 't.db'}", "status",
         "--watch", "--interval", "0.2"],
        stdin=subprocess.DEVNULL, stdout=terminal.slave, stderr=subprocess.PIPE, cwd=tmp_path,
        env=_environment(**TERMINAL_ENV),
        # a shell may start the test with SIGINT ignored, which the child would inherit
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    terminal.start()
    try:
        terminal.wait_for(lambda out: WATCH_HEADING in out and "first" in out, "first view")
        run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", "--job", "second",
            stdin=(_line("b") + "\n").encode())
        terminal.wait_for(lambda out: "second" in out, "view showing the job enqueued since")
        assert terminal.output.count(WATCH_HEADING) >= 2
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=DEADLINE_SECONDS)
        terminal.close()
    assert proc.returncode == 0, stderr
    assert stderr == b""
    assert "Traceback" not in terminal.output and "Aborted" not in terminal.output


def test_status_watch__off_a_terminal_prints_one_view_after_another(tmp_path: Path) -> None:
    run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", stdin=(_line("a") + "\n").encode())
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker", "--db", f"sqlite:///{tmp_path / 't.db'}", "status",
         "--watch", "--interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=_environment(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    lines: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    while sum(WATCH_HEADING.encode() in line for line in lines) < 2:
        assert time.monotonic() < deadline, lines
        lines.append(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=DEADLINE_SECONDS)
    assert proc.returncode == 0, stderr
    assert stderr == b""
    assert b"\x1b" not in b"".join(lines) + rest  # no cursor moves or colour in a file


def _large_input(path: Path, n: int, last: str | None = None) -> Path:
    """`n` items, over 1 MB, and a last line of its own."""
    padding = "x" * 120
    lines = [_line(f"item-{i:05d}", f"{padding} {i}") for i in range(n)]
    path.write_text("\n".join(lines + ([last] if last else [])) + "\n")
    assert path.stat().st_size > 1024 * 1024
    return path


def _enqueue_on_terminal(tmp_path: Path, *args: str,
                         stdin: bytes | None = None) -> tuple[int, str]:
    """Runs enqueue with stdout and stderr on one pseudo-terminal; its exit code and all it
    showed there."""
    terminal = Terminal()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker", "--db", f"sqlite:///{tmp_path / 't.db'}", "enqueue",
         *args, "--model", "gpt-5-mini"],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=terminal.slave, stderr=terminal.slave, cwd=tmp_path,
        env=_environment(**TERMINAL_ENV))
    terminal.start()
    proc.communicate(stdin, timeout=DEADLINE_SECONDS)
    terminal.close()
    return proc.returncode, terminal.output


def _after_the_bar(shown: str) -> str:
    """What is left on screen after the bar's line was last erased."""
    return shown.rsplit("\x1b[2K", 1)[-1]


def test_enqueue__a_large_file_shows_a_bar_on_a_terminal_then_the_outcome(
        tmp_path: Path) -> None:
    data = _large_input(tmp_path / "big.jsonl", 8_000)
    code, shown = _enqueue_on_terminal(tmp_path, str(data))
    assert code == 0, shown
    bars = re.findall(r"reading big\.jsonl .*? MB ([\d,]+) lines", shown)
    assert bars, shown
    assert bars[-1] == "8,000"
    assert _after_the_bar(shown).strip() == "enqueued 8000 items, skipped 0 already present"


def test_enqueue__a_bad_line_erases_the_bar_and_the_error_is_the_last_line(
        tmp_path: Path) -> None:
    data = _large_input(tmp_path / "big.jsonl", 8_000, last="{not json")
    code, shown = _enqueue_on_terminal(tmp_path, str(data))
    assert code == 2, shown
    assert "reading" in shown and " lines" in shown
    left = _after_the_bar(shown).strip().splitlines()
    assert len(left) == 1 and left[0].startswith(f"Error: {data}:8001: not valid JSON"), left
    assert "Traceback" not in shown


def test_enqueue__stdin_shows_a_spinner_with_the_count(tmp_path: Path) -> None:
    data = "".join(_line(f"s{i}") + "\n" for i in range(50)).encode()
    code, shown = _enqueue_on_terminal(tmp_path, "-", stdin=data)
    assert code == 0, shown
    assert re.search(r"reading <stdin> .*?\d+ lines", shown), shown
    assert _after_the_bar(shown).strip() == "enqueued 50 items, skipped 0 already present"


def test_enqueue__nothing_more_on_stderr_when_it_is_not_a_terminal(tmp_path: Path) -> None:
    data = _large_input(tmp_path / "big.jsonl", 8_000)
    done = run(tmp_path, "enqueue", str(data), "--model", "gpt-5-mini")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == "enqueued 8000 items, skipped 0 already present\n"
    bad = _large_input(tmp_path / "bad.jsonl", 8_000, last="{not json")
    assert_one_line_error(run(tmp_path, "enqueue", str(bad), "--model", "gpt-5-mini",
                              db=f"sqlite:///{tmp_path / 'other.db'}"),
                          f"{bad}:8001:", "not valid JSON")
