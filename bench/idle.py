"""An idle daemon's CPU: `tracker run` with nothing queued, against the fake Batch API.
Prints figures; never passes or fails.

    python bench/idle.py [--seconds 20] [--engine sqlite|postgresql|both]

For each engine, on a database made by `tracker init` with nothing queued (SQLite: a fresh
file; PostgreSQL, if a server answers at $TRACKER_BENCH_PG_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres: a fresh database `tracker_bench_idle`,
dropped at the end; nothing else on the server is touched), and a fake OpenAI Batch API
(`python -m tracker.testing.fake_openai`, its own process) named by OPENAI_BASE_URL:
1. `tracker run` (not --until-idle) on the packaged default config, at the default poll
   interval (no --poll-interval), then a second daemon with `--poll-interval 0.5`.
   Once its log says its worker started (a 60 s deadline), its CPU time (utime + stime of all
   its threads, from /proc/PID/stat) is read at the start and the end of a window of
   --seconds; the figure is CPU seconds / window seconds, in percent of one core.
2. The floor, over the very same window: an idle `python -c "...time.sleep(...)"` started
   beside the daemon, measured from once it has said it is up.
Then the daemon gets SIGTERM and must exit 0 (within 30 s); how long it took is shown.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import (
    API_KEY,
    RUN_DIR,
    Processes,
    add_engine_option,
    emit_result,
    exclusive,
    exit_on_sigterm,
    fake_server,
    pg_database,
    selected_engines,
    stop,
    wait,
)

PG_DATABASE = "tracker_bench_idle"
_STARTED = re.compile(r" INFO (daemon|worker \S+) started\b.*poll interval ([0-9.]+)s")
SLEEPER = "import sys, time; print('up', flush=True); time.sleep(86400)"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (every thread of it), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


def wait_until_started(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> float:
    """The poll interval the daemon's log reports once its worker has started."""
    while True:
        match = _STARTED.search(log.read_text(errors="replace"))
        if match:
            return float(match.group(2))
        if proc.poll() is not None:
            raise RuntimeError(f"tracker run exited with code {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"tracker run did not start within 60 s; see {log}")
        time.sleep(0.05)


def measure(procs: Processes, env: dict[str, str], log: Path, seconds: float,
            poll: float | None) -> dict[str, float]:
    """One daemon and the sleeping floor over the same window; then the daemon's stop."""
    args = [sys.executable, "-m", "tracker", "run"]
    if poll is not None:
        args += ["--poll-interval", str(poll)]
    daemon = procs.start(args, env=env, log=log)
    sleeper = subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE)
    procs.started.append(sleeper)
    try:
        interval = wait_until_started(daemon, log, time.monotonic() + 60)
        assert sleeper.stdout is not None
        if sleeper.stdout.readline().strip() != b"up":
            raise RuntimeError("the sleeping floor process did not start")
        start = time.monotonic()
        daemon_start, sleeper_start = cpu_seconds(daemon.pid), cpu_seconds(sleeper.pid)
        time.sleep(seconds)  # the measuring window, not a synchronisation
        daemon_cpu = cpu_seconds(daemon.pid) - daemon_start
        sleeper_cpu = cpu_seconds(sleeper.pid) - sleeper_start
        window = time.monotonic() - start
        if daemon.poll() is not None:
            raise RuntimeError(f"tracker run exited during the window; see {log}")
        stopping = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code, rss = wait(daemon, time.monotonic() + 30)
        stopped = time.monotonic() - stopping
        if code != 0:
            raise RuntimeError(f"tracker run exited with code {code} after SIGTERM; see {log}")
    finally:
        stop(daemon)
        stop(sleeper)
    return {"interval": interval, "percent": daemon_cpu / window * 100,
            "floor": sleeper_cpu / window * 100, "window": window, "stop": stopped,
            "rss": rss}


def engine_run(procs: Processes, work: Path, engine: str, db_url: str, seconds: float) -> None:
    from tracker.config import PACKAGED_CONFIG

    work.mkdir(parents=True)
    with fake_server(procs, work, instant=True) as base_url:
        env = {**os.environ, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": base_url,
               "TRACKER_DB": db_url, "TRACKER_CONFIG": str(PACKAGED_CONFIG)}
        procs.run([sys.executable, "-m", "tracker", "init"], env=env, log=work / "init.log")
        for poll, target in ((None, "idle daemon CPU"), (0.5, "idle daemon CPU, poll 0.5 s")):
            name = "default" if poll is None else f"poll-{poll:g}"
            figures = measure(procs, env, work / f"daemon-{name}.log", seconds, poll)
            which = "the default" if poll is None else "--poll-interval"
            print(f"  poll interval {figures['interval']:g} s ({which}): "
                  f"{figures['percent']:.2f} % of a core over {figures['window']:.1f} s "
                  f"(sleeping python: {figures['floor']:.2f} %); SIGTERM -> exit 0 in "
                  f"{figures['stop']:.2f} s; peak RSS {figures['rss']:.0f} MB", flush=True)
            emit_result(target, engine, figures["percent"], figures["floor"], "% core",
                        "< 1%", figures["rss"],
                        f"poll interval {figures['interval']:g} s ({which}), window "
                        f"{figures['window']:.0f} s; floor: a sleeping python; stopped by "
                        f"SIGTERM in {figures['stop']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="the measuring window (default 20)")
    add_engine_option(parser)
    args = parser.parse_args()
    exit_on_sigterm()
    with exclusive("idle"):
        run_all(args)


def run_all(args: argparse.Namespace) -> None:
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    work = (RUN_DIR / "idle").resolve()
    shutil.rmtree(work, ignore_errors=True)
    procs = Processes()
    try:
        if args.engine != "postgresql":
            print(f"SQLite, window {args.seconds:g} s", flush=True)
            db = work / "sqlite" / "tracker.db"
            engine_run(procs, work / "sqlite", "sqlite", f"sqlite:///{db}", args.seconds)
        if args.engine == "sqlite":
            print("PostgreSQL rows skipped: --engine sqlite")
            return
        if not selected_engines("postgresql"):
            return
        print(f"PostgreSQL, window {args.seconds:g} s, database {PG_DATABASE} (dropped at "
              "the end)", flush=True)
        with pg_database(PG_DATABASE) as db_url:
            engine_run(procs, work / "postgresql", "postgresql", db_url, args.seconds)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
