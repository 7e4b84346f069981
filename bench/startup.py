"""CLI start-up time against the interpreter's own. Prints figures; never passes or fails.

    python bench/startup.py [--runs 15]

Set-up (not timed): a small SQLite database, initialised and holding a few enqueued items.
Each command below then runs `--runs` times as a fresh `python -m tracker` process, the
commands taking turns so a burst of load elsewhere on the machine hits them all alike; the
figure is the median wall time of a whole run (start, import, open the database, answer,
exit), and the peak RSS is the child's own (from `os.wait4`).
1. Floors: `python -c pass` (the interpreter, `site` and the editable-install hook) and
   `python -c "import sqlite3"` (what any command on an SQLite database needs at least).
2. For reference: `python -c "import sqlalchemy"`, the library every database command goes
   through, so its import is part of every database command's time.
3. The tracker: `--help`, `status`, `results`, `init` (on the initialised database: a version
   check), `enqueue` of a file whose items are already present (reads the config too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import RUN_DIR, emit_result

PYTHON = sys.executable
GOAL = "< 0.25 s"
BARE = "python -c pass"
SQLITE = "python -c 'import sqlite3'"
SQLALCHEMY = "python -c 'import sqlalchemy'"


def timed_run(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of `argv`, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {errors.decode()}")
    return elapsed, usage.ru_maxrss / 1024


def prepare(directory: Path) -> tuple[str, Path]:
    """A database URL with a few items in it, and the file they came from."""
    db = directory / "startup.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db.resolve()}"
    items = directory / "startup-items.jsonl"
    with items.open("w", encoding="utf-8") as out:
        for i in range(20):
            out.write(json.dumps({"id": f"item-{i}", "input_payload": {
                "messages": [{"role": "user", "content": f"What is {i} + 1?"}]}}) + "\n")
    subprocess.run([PYTHON, "-m", "tracker", "--db", url, "enqueue", str(items.resolve()),
                    "--model", "gpt-5-mini"], cwd=directory, check=True, capture_output=True)
    return url, items.resolve()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    directory = RUN_DIR / "startup"
    directory.mkdir(parents=True, exist_ok=True)
    url, items = prepare(directory)
    tracker = [PYTHON, "-m", "tracker", "--db", url]
    floors = {
        BARE: [PYTHON, "-c", "pass"],
        SQLITE: [PYTHON, "-c", "import sqlite3"],
        SQLALCHEMY: [PYTHON, "-c", "import sqlalchemy"],
    }
    #: Each command and the floor it is compared with.
    commands = {
        "tracker --help": ([PYTHON, "-m", "tracker", "--help"], BARE),
        "tracker status": ([*tracker, "status"], SQLITE),
        "tracker results": ([*tracker, "results"], SQLITE),
        "tracker init": ([*tracker, "init"], SQLITE),
        "tracker enqueue (all present)": (
            [*tracker, "enqueue", str(items), "--model", "gpt-5-mini"], SQLITE),
    }
    argvs = {**floors, **{name: argv for name, (argv, _) in commands.items()}}
    times: dict[str, list[float]] = {name: [] for name in argvs}
    rss: dict[str, float] = dict.fromkeys(argvs, 0.0)
    for _ in range(args.runs):
        for name, argv in argvs.items():
            seconds, peak = timed_run(argv, directory)
            times[name].append(seconds)
            rss[name] = max(rss[name], peak)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"median wall time of {args.runs} runs each ({PYTHON}):")
    for name in argvs:
        print(f"  {name:<34} {median[name]:6.3f} s  (min {min(times[name]):.3f} s, "
              f"peak RSS {rss[name]:.0f} MB)")
    for name, (_, floor) in commands.items():
        emit_result(f"start-up: {name}", "sqlite", median[name], median[floor], "s", GOAL,
                    rss_mb=rss[name], note=f"median of {args.runs} runs; floor: {floor}; "
                    f"{SQLALCHEMY} takes {median[SQLALCHEMY]:.3f} s")


if __name__ == "__main__":
    main()
