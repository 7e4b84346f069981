"""What the benchmarks share: how a process's peak RSS is read, how figures are printed (one
`RESULT {json}` line per target, for `bench/all.py`'s table), the generated workload, the
PostgreSQL server they may use (one fresh database per measurement), and the subprocesses they
start (the fake OpenAI Batch API among them). What each one measures stays in its own script.

Nothing heavy is imported here at module level (psycopg, SQLAlchemy, tracker only inside the
functions that need them), so a benchmark's parent process stays small.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracker.config import TrackerConfig

RUN_DIR = Path("bench-run")
#: The model every generated item is sent to.
MODEL = "gpt-5-mini"
#: The key given to the fake OpenAI server (it checks none).
API_KEY = "sk-bench-not-a-real-key"
#: A subprocess that has not finished by then is stopped and the benchmark fails.
TIMEOUT = 1800.0


# -- figures --------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's own peak RSS in MB: `VmHWM` in /proc/self/status. Not `ru_maxrss`: a
    process started by `subprocess` (vfork or fork, then exec) keeps in it its parent's peak
    when that was higher, which would hide whether a child's memory grows with N. Where /proc
    is missing, `ru_maxrss` all the same (kB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def run_child(script: str, *args: str) -> dict[str, float]:
    """Run `script --child ARGS...` and return the figures it printed last."""
    out = subprocess.run([sys.executable, script, "--child", *args], check=True,
                         capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def count_label(n: int) -> str:
    """50_000 -> "50k", 1_000_000 -> "1M", 12_345 -> "12,345"."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


def rss_growth(results: dict[int, dict[str, dict[str, float]]], small: int, large: int) -> str:
    """How the tracker's peak RSS grows from the small run to the large one, for a note."""
    grown = results[large]["tracker"]["peak_rss_mb"] - results[small]["tracker"]["peak_rss_mb"]
    return f"RSS {round(grown):+d} MB from {count_label(small)} to {count_label(large)}"


def report(results: dict[int, dict[str, dict[str, float]]], unit: str, what: str,
           floor: str) -> None:
    """Print each size's tracker and floor rates, their ratio, and how peak RSS grows."""
    for n, pair in results.items():
        t, f = pair["tracker"], pair["floor"]
        print(f"{n:>9,} {unit:<6} tracker {what}: {t['items'] / t['seconds']:>9,.0f} {unit}/s "
              f"({t['seconds']:.2f} s, peak RSS {t['peak_rss_mb']:.0f} MB)")
        print(f"{'':>16}{floor}: {f['items'] / f['seconds']:>9,.0f} {unit}/s "
              f"({f['seconds']:.2f} s, peak RSS {f['peak_rss_mb']:.0f} MB)")
        print(f"{'':>16}ratio (tracker time / floor time): {t['seconds'] / f['seconds']:.2f}x")
    sizes = sorted(results)
    growth = (results[sizes[-1]]["tracker"]["peak_rss_mb"]
              - results[sizes[0]]["tracker"]["peak_rss_mb"])
    print(f"tracker peak RSS grows {growth:+.0f} MB from {sizes[0]:,} to {sizes[-1]:,} {unit}")


#: Where a benchmark's figures for `bench/all.py`'s table start: one line per target measured.
RESULT_PREFIX = "RESULT "


def emit_result(target: str, engine: str, tracker: float, floor: float | None, unit: str,
                goal: str, rss_mb: float | None = None, note: str = "") -> None:
    """Print one target's figures as a `RESULT {json}` line. `tracker` and `floor` are in
    `unit` (seconds unless said otherwise); the ratio is tracker / floor; `goal` is what the
    issue asks (e.g. "<= 2x", "< 0.25 s")."""
    ratio = tracker / floor if floor else None
    print(RESULT_PREFIX + json.dumps({
        "target": target, "engine": engine, "tracker": tracker, "floor": floor, "unit": unit,
        "ratio": ratio, "goal": goal, "rss_mb": rss_mb, "note": note}), flush=True)


# -- the workload ---------------------------------------------------------------------------

def generate(path: Path, n: int) -> None:
    """`n` items in the tracker's input format, one JSON object a line."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            item = {"id": f"item-{i:08d}", "input_payload": {
                "messages": [{"role": "user", "content": f"Question number {i}: what is {i} + 1?"}],
                "max_tokens": 50}}
            out.write(json.dumps(item) + "\n")


def items_file(n: int) -> Path:
    """The JSONL input of `n` generated items (written once, reused by later runs)."""
    path = RUN_DIR / f"items-{n}.jsonl"
    if not path.exists():
        RUN_DIR.mkdir(exist_ok=True)
        partial = path.with_suffix(".partial")
        generate(partial, n)
        partial.rename(path)
    return path


def tracker_config(max_prompts_per_batch: int) -> TrackerConfig:
    """A config of one OpenAI model, `MODEL`, packed up to `max_prompts_per_batch` items."""
    from tracker.config import TrackerConfig

    return TrackerConfig.model_validate({"batch": {"providers": {"openai": {
        "models": [{"name": MODEL, "max_prompts_per_batch": max_prompts_per_batch}]}}}})


# -- SQLite ---------------------------------------------------------------------------------

def database_url(target: str) -> str:
    """A child's database argument as a URL: a PostgreSQL URL as it is, else an SQLite file."""
    return target if target.startswith("postgresql") else f"sqlite:///{target}"


def remove_sqlite(db: Path) -> None:
    """The SQLite file `db` and its WAL and shared-memory files, where they exist."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


# -- PostgreSQL -----------------------------------------------------------------------------

PG_URL_VARIABLE = "TRACKER_BENCH_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def pg_server_url() -> str:
    """The PostgreSQL server the benchmarks use: `$TRACKER_BENCH_PG_URL`, else the default."""
    return os.environ.get(PG_URL_VARIABLE) or DEFAULT_PG_URL


def libpq(url: str, database: str | None = None) -> str:
    """A SQLAlchemy URL as psycopg reads it (`postgresql://...`), on `database` if given."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """`url` with its password hidden, to print."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def pg_unavailable() -> str | None:
    """Why no PostgreSQL server answers at the benchmark URL (one line); None when one does."""
    try:
        import psycopg

        with psycopg.connect(libpq(pg_server_url()), connect_timeout=3):
            return None
    except Exception as exc:  # no driver, no server, bad credentials: all mean "skip"
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__


def _admin(sql: str, name: str) -> None:
    """Run `sql` about database `name` from the server URL's own database (or `postgres`,
    should that be `name` itself)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = pg_server_url()
    admin = make_url(url).database
    admin = admin if admin and admin != name else "postgres"
    with psycopg.connect(libpq(url, admin), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.encode())


@contextmanager
def pg_database(name: str, template: str | None = None) -> Iterator[str]:
    """A fresh database `name` on the benchmark server (a left-over one is dropped first),
    copied from `template` if given, else empty; its tracker URL. Dropped afterwards."""
    from sqlalchemy.engine import make_url

    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', name)
    _admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""), name)
    try:
        yield make_url(pg_server_url()).set(drivername="postgresql+psycopg", database=name
                                            ).render_as_string(hide_password=False)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', name)


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine", choices=("sqlite", "postgresql", "both"), default="both",
        help=f"PostgreSQL runs only when a server answers at ${PG_URL_VARIABLE} "
             f"(default {DEFAULT_PG_URL}); default both")


def selected_engines(choice: str) -> list[str]:
    """The engines to measure; one line saying why when PostgreSQL is skipped."""
    chosen = ["sqlite"] if choice in ("sqlite", "both") else []
    if choice in ("postgresql", "both"):
        reason = pg_unavailable()
        if reason is None:
            chosen.append("postgresql")
        else:
            print(f"postgresql: skipped: no server answers at {shown_url(pg_server_url())} "
                  f"({reason}); set {PG_URL_VARIABLE} to measure it", flush=True)
    return chosen


# -- subprocesses ---------------------------------------------------------------------------

class Processes:
    """Every subprocess a benchmark starts, so a `finally` stops those still running."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], *, env: dict[str, str] | None = None,
              log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start `args`, its stdout and stderr into `log` (else discarded)."""
        if log is None:
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT)
        else:
            with log.open("wb") as out:
                proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc

    def run(self, args: list[str], *, env: dict[str, str] | None = None,
            log: Path | None = None) -> float:
        """Run `args` to the end; its peak RSS in MB (see `wait`). Fails on a non-zero exit."""
        code, rss = wait(self.start(args, env=env, log=log), time.monotonic() + TIMEOUT)
        if code != 0:
            where = f"; see {log}" if log is not None else ""
            raise RuntimeError(f"{' '.join(args)} exited with code {code}{where}")
        return rss

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc.returncode is not None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, float]:
    """`proc`'s exit code and its peak RSS in MB as `wait4` reports it; `TimeoutError` once
    `time.monotonic()` passes `deadline`. Like `ru_maxrss` (see `peak_rss_mb`), that figure is
    at least this process's own peak at the time `proc` was started: it is the child's own
    only where it is higher than that."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 1024
        if time.monotonic() > deadline:
            command = proc.args if isinstance(proc.args, list | tuple) else [proc.args]
            raise TimeoutError(f"{' '.join(map(str, command))} did not finish in time")
        time.sleep(0.005)


@contextmanager
def fake_server(procs: Processes, directory: Path, *, instant: bool = False,
                latency: float = 0.0) -> Iterator[str]:
    """A fresh fake OpenAI Batch API (`python -m tracker.testing.fake_openai`) in a process of
    its own, on loopback, its output in `directory`/fake-server.log; its base_url. `instant`:
    no lag (a batch is `completed` at the first retrieve after its create). `latency`: real
    seconds every request takes, as over the internet."""
    url_file = directory / "fake-server-url"
    url_file.unlink(missing_ok=True)
    lag = ["--validating-seconds", "0", "--in-progress-seconds", "0",
           "--finalizing-seconds", "0"] if instant else []
    lag += ["--latency-seconds", str(latency)] if latency else []
    proc = procs.start([sys.executable, "-m", "tracker.testing.fake_openai",
                        "--port-file", str(url_file), *lag],
                       log=directory / "fake-server.log")
    try:
        deadline = time.monotonic() + 30
        while not url_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the fake server exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the fake server did not start within 30 s")
            time.sleep(0.02)
        yield url_file.read_text().strip()
    finally:
        stop(proc)
        url_file.unlink(missing_ok=True)


def exit_on_sigterm() -> None:
    """SIGTERM (e.g. from `bench/all.py`) ends this process through its `finally` blocks, so
    the subprocesses it started are stopped too."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))


@contextmanager
def exclusive(name: str) -> Iterator[None]:
    """One run of benchmark `name` at a time on this machine: a second one (e.g. from
    `bench/all.py`) would share its work directory and its PostgreSQL database."""
    RUN_DIR.mkdir(exist_ok=True)
    with (RUN_DIR / f"{name}.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run of {name}.py to finish", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
