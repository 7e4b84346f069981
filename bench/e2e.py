"""End to end: the tracker against a bare `openai` SDK script on the same fake Batch API.
Prints figures; never passes or fails.

    python bench/e2e.py [--items 100000] [--poll 0.5] [--skip-pg]
                        [--engine sqlite|postgresql|both]

Set-up (not timed): N generated items in one JSONL file (`bench-run/items-N.jsonl`, the input
`enqueue.py` and `pack_upload.py` use too). Every measurement gets a fresh fake
OpenAI Batch API (`python -m tracker.testing.fake_openai`, its own process; no faults, no lag:
a batch is `completed` at the first retrieve after its create), so no run pays for the
batches of another. Each side is timed by wall clock, in this process, from the start of its
first subprocess until every result is on disk; both poll every `--poll` seconds.
1. SQLite, the items in batches of at most 50,000 lines (OpenAI's limit, and what the tracker
   packs with `max_prompts_per_batch: 50000`):
   - floor: `bench/bare_sdk.py`, the stateless script a user writes by hand (write the request
     lines, `files.create` and `batches.create` each file, `batches.retrieve` every --poll
     seconds, stream each output file to disk);
   - tracker: `tracker enqueue FILE` then `tracker run --until-idle --poll-interval POLL`, real
     subprocesses as a user runs them, on a fresh SQLite file and a config file naming the fake
     server's base_url; timed from the start of enqueue until run exits (the results are then
     in the database file). Then `tracker results -o FILE`, timed on its own (not in the ratio);
   - the daemon a user leaves running: `tracker run` started and idle before the clock, then
     `tracker enqueue`, timed until the database holds every result (reported, not the
     target: the target row above counts the daemon's start too);
   - the database file's bytes per item after `PRAGMA wal_checkpoint(TRUNCATE)`, beside the
     average input payload (as stored: sorted keys, compact) plus provider output line (from
     the bare script's downloaded files) per item.
2. PostgreSQL, if a server answers at $TRACKER_BENCH_PG_URL (default
   postgresql+psycopg://postgres@127.0.0.1:5432/postgres): the same items in 20 batches
   (`max_prompts_per_batch: N/20`) on a fresh database `tracker_bench_e2e` (created afresh for
   each run and dropped after it; nothing else on the server is touched), `tracker
   init` not timed, then enqueue and 1, then 3, `tracker run --until-idle` workers side by
   side; floor: `bench/bare_sdk.py` on the same 20-batch split. Then the same again with every
   call to the fake server taking 100 ms (`--latency-seconds`), as calls to a real provider
   do: where several workers overlap their calls (both pairs run on the same cores).
Every tracker run is checked afterwards (`tracker status --json`: N items succeeded). Peak RSS
is each process's from `wait4` (`harness.wait`: the child's own where it is above this
process's peak when the child started); for the tracker, the largest of its processes. The note
of each tracker row gives, from the workers' logs, when the first worker was up and when the
last batch was packed, submitted, completed and ingested (seconds from the start of enqueue).
Files go to bench-run/e2e/; one run at a time (a lock file; a second run waits).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from harness import (
    API_KEY,
    MODEL,
    RUN_DIR,
    TIMEOUT,
    Processes,
    add_engine_option,
    count_label,
    emit_result,
    exclusive,
    exit_on_sigterm,
    fake_server,
    items_file,
    pg_database,
    selected_engines,
    stop,
    wait,
)

BARE_SDK = Path(__file__).resolve().with_name("bare_sdk.py")
#: OpenAI's limit on the lines of one batch; the tracker packs up to it.
MAX_LINES_PER_BATCH = 50_000
PG_DATABASE = "tracker_bench_e2e"
PG_BATCHES = 20
#: Seconds every call takes in the second PostgreSQL pair: a call to a real provider crosses
#: the internet (the fake answers on loopback in about a millisecond).
LATENCY = 0.1


# -- the workload ---------------------------------------------------------------------------

def average_payload_bytes(path: Path) -> float:
    """The average `input_payload` as the tracker stores it (sorted keys, compact)."""
    total = count = 0
    with path.open("rb") as source:
        for raw in source:
            payload = json.loads(raw)["input_payload"]
            total += len(json.dumps(payload, sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=False).encode())
            count += 1
    return total / count


# -- the two sides --------------------------------------------------------------------------

@dataclass
class Side:
    seconds: float
    peak_rss_mb: float
    detail: dict[str, float] = field(default_factory=dict)
    note: str = ""


def bare_sdk(procs: Processes, work: Path, items: Path, n: int, batch_size: int,
             poll: float, latency: float = 0.0) -> Side:
    """The floor: bare_sdk.py against a fresh fake server; checks it downloaded n lines."""
    out_dir = work / "bare-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    log = work / "bare-sdk.log"
    with fake_server(procs, work, instant=True, latency=latency) as base_url:
        env = {**os.environ, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": base_url}
        start = time.perf_counter()
        rss = procs.run([sys.executable, str(BARE_SDK), str(items), str(out_dir),
                          "--model", MODEL, "--batch-size", str(batch_size), "--poll", str(poll)],
                  env=env, log=log)
        seconds = time.perf_counter() - start
    outputs = sorted(out_dir.glob("output-*.jsonl"))
    lines = sum(1 for path in outputs for _ in path.open("rb"))
    if lines != n:
        raise RuntimeError(f"the bare SDK script downloaded {lines} lines, not {n}")
    figures = json.loads(log.read_text().strip().splitlines()[-1])
    output_bytes = sum(path.stat().st_size for path in outputs)
    return Side(seconds, rss, {"batches": figures["batches"], "output_bytes": output_bytes})


def write_config(path: Path, base_url: str, batch_size: int) -> None:
    path.write_text(
        "batch:\n  providers:\n    openai:\n      enabled: true\n"
        f"      base_url: {base_url}\n"
        f"      models:\n        - name: {MODEL}\n          mode: chat\n"
        f"          max_prompts_per_batch: {batch_size}\n          pricing_tier: batch\n")


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_EVENTS = {"started": re.compile(r" INFO (daemon|worker \S+) started"),
           "packed": re.compile(r": packed \d+ items"),
           "submitted": re.compile(r": submitted as "),
           "completed": re.compile(r"-> completed \(provider"),
           "ingested": re.compile(r"\): ingested; ")}


def timeline(logs: list[Path], start: float) -> dict[str, float]:
    """Seconds from `start` to the last of each event the workers' logs show (to the first
    worker's start)."""
    last: dict[str, float] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            match = _LOG_TIME.match(line)
            if not match:
                continue
            for name, pattern in _EVENTS.items():
                if pattern.search(line):
                    at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    pick = min if name == "started" else max
                    last[name] = pick(last.get(name, at - start), at - start)
    return last


def per_worker(logs: list[Path]) -> str:
    """How many batches each worker's log says it submitted / ingested."""
    shares = []
    for log in logs:
        text = log.read_text(errors="replace")
        shares.append(f"{len(_EVENTS['submitted'].findall(text))}/"
                      f"{len(_EVENTS['ingested'].findall(text))}")
    return " ".join(shares)


def tracker(procs: Processes, work: Path, items: Path, n: int, db_url: str, batch_size: int,
            poll: float, workers: int = 1, export: bool = False, latency: float = 0.0) -> Side:
    """enqueue + `workers` x `run --until-idle` against a fresh fake server, timed; then
    checked with `tracker status --json`, and with `export` `tracker results -o` timed."""
    config = work / "llm_config.yaml"
    logs = [work / f"worker-{k}.log" for k in range(1, workers + 1)]
    tracker_cmd = [sys.executable, "-m", "tracker"]
    with fake_server(procs, work, instant=True, latency=latency) as base_url:
        write_config(config, base_url, batch_size)
        env = {**os.environ, "OPENAI_API_KEY": API_KEY, "TRACKER_DB": db_url,
               "TRACKER_CONFIG": str(config)}
        env.pop("OPENAI_BASE_URL", None)
        if db_url.startswith("postgresql"):
            procs.run([*tracker_cmd, "init"], env=env, log=work / "init.log")
        wall_start = time.time()
        start = time.perf_counter()
        enqueue_rss = procs.run([*tracker_cmd, "enqueue", str(items), "--model", MODEL],
                          env=env, log=work / "enqueue.log")
        enqueued = time.perf_counter() - start
        started = [procs.start([*tracker_cmd, "run", "--until-idle", "--poll-interval",
                                str(poll)], env=env, log=log) for log in logs]
        deadline = time.monotonic() + TIMEOUT
        waited = [wait(proc, deadline) for proc in started]
        seconds = time.perf_counter() - start
    for (code, _), log in zip(waited, logs, strict=True):
        if code != 0:
            raise RuntimeError(f"tracker run exited with code {code}; see {log}")
    status = json.loads(subprocess.run([*tracker_cmd, "status", "--json"], env=env, check=True,
                                       capture_output=True, text=True).stdout)
    if status["items"]["succeeded"] != n:
        raise RuntimeError(f"the tracker stored {status['items']} items, not {n} succeeded")
    detail = {"enqueue_seconds": enqueued, "run_seconds": seconds - enqueued}
    events = timeline(logs, wall_start)
    note = ("first worker up, last packed/submitted/completed/ingested at "
            + "/".join(f"{events.get(k, math.nan):.1f}" for k in _EVENTS) + " s")
    if workers > 1:
        note += f"; batches submitted/ingested by each worker: {per_worker(logs)}"
    if export:
        results = work / "results.jsonl"
        start = time.perf_counter()
        export_rss = procs.run([*tracker_cmd, "results", "-o", str(results)], env=env,
                         log=work / "results.log")
        detail["export_seconds"] = time.perf_counter() - start
        detail["export_rss_mb"] = export_rss
        lines = sum(1 for _ in results.open("rb"))
        if lines != n:
            raise RuntimeError(f"tracker results wrote {lines} lines, not {n}")
    rss = max(enqueue_rss, *(r for _, r in waited))
    detail["enqueue_rss_mb"] = enqueue_rss
    detail["run_rss_mb"] = max(r for _, r in waited)
    return Side(seconds, rss, detail, note)


def tracker_warm(procs: Processes, work: Path, items: Path, n: int, db: Path, batch_size: int,
                 poll: float) -> Side:
    """The daemon a user leaves running: `tracker run` started first and left idle (not
    timed), then timed from the start of `tracker enqueue` until the database holds `n`
    succeeded items (read every 0.1 s with `sqlite3`, read-only); then the daemon is stopped."""
    config = work / "llm_config.yaml"
    log = work / "worker-1.log"
    with fake_server(procs, work, instant=True) as base_url:
        write_config(config, base_url, batch_size)
        env = {**os.environ, "OPENAI_API_KEY": API_KEY, "TRACKER_DB": f"sqlite:///{db}",
               "TRACKER_CONFIG": str(config)}
        env.pop("OPENAI_BASE_URL", None)
        procs.run([sys.executable, "-m", "tracker", "init"], env=env, log=work / "init.log")
        daemon = procs.start([sys.executable, "-m", "tracker", "run", "--poll-interval",
                              str(poll)], env=env, log=log)
        deadline = time.monotonic() + TIMEOUT
        while " started " not in log.read_text(errors="replace"):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start; see {log}")
            time.sleep(0.05)
        wall_start = time.time()
        start = time.perf_counter()
        enqueue_rss = procs.run([sys.executable, "-m", "tracker", "enqueue", str(items),
                                 "--model", MODEL], env=env, log=work / "enqueue.log")
        enqueued = time.perf_counter() - start
        while succeeded(db) < n:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon stopped or took too long; see {log}")
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        stop(daemon)
    events = timeline([log], wall_start)
    note = ("last packed/submitted/completed/ingested at "
            + "/".join(f"{events.get(k, math.nan):.1f}" for k in list(_EVENTS)[1:]) + " s")
    return Side(seconds, enqueue_rss, {"enqueue_seconds": enqueued}, note)


def succeeded(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute(
            "SELECT count(*) FROM items WHERE status = 'succeeded'").fetchone()[0])
    finally:
        conn.close()


def database_bytes(db: Path) -> tuple[int, int]:
    """The SQLite file's size after a checkpoint, and the bytes of its free pages."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0] * page_size
    finally:
        conn.close()
    return db.stat().st_size, free


# -- the runs -------------------------------------------------------------------------------

def sqlite_run(procs: Processes, work: Path, items: Path, n: int, poll: float) -> None:
    batch_size = MAX_LINES_PER_BATCH
    batches = math.ceil(n / batch_size)
    print(f"SQLite: {n:,} items in {batches} batch(es) of at most {batch_size:,}, "
          f"poll {poll:g} s", flush=True)
    floor = bare_sdk(procs, work / "sqlite-bare", items, n, batch_size, poll)
    print(f"  bare SDK script: {floor.seconds:7.2f} s (peak RSS {floor.peak_rss_mb:.0f} MB)",
          flush=True)
    db = work / "sqlite-tracker" / "tracker.db"
    side = tracker(procs, db.parent, items, n, f"sqlite:///{db}", batch_size, poll, export=True)
    d = side.detail
    print(f"  tracker:         {side.seconds:7.2f} s (enqueue {d['enqueue_seconds']:.2f} s, "
          f"run {d['run_seconds']:.2f} s; peak RSS enqueue {d['enqueue_rss_mb']:.0f} MB, "
          f"run {d['run_rss_mb']:.0f} MB)", flush=True)
    print(f"                   {side.note}")
    print(f"  ratio (tracker time / floor time): {side.seconds / floor.seconds:.2f}x")
    print(f"  tracker results -o FILE: {d['export_seconds']:.2f} s "
          f"({n / d['export_seconds']:,.0f} items/s, peak RSS {d['export_rss_mb']:.0f} MB)")
    size, free = database_bytes(db)
    payload = average_payload_bytes(items)
    output = floor.detail["output_bytes"] / n
    print(f"  database: {size:,} B after checkpoint ({free:,} B free pages) = "
          f"{size / n:,.0f} B/item; input payload {payload:,.0f} B + output line "
          f"{output:,.0f} B = {payload + output:,.0f} B/item", flush=True)
    emit_result(f"end to end {count_label(n)}", "sqlite", side.seconds, floor.seconds, "s",
                "<= 1.5x", side.peak_rss_mb,
                f"{batches} batch(es); enqueue {d['enqueue_seconds']:.2f} s + run "
                f"{d['run_seconds']:.2f} s; {side.note}; bare script peak RSS "
                f"{floor.peak_rss_mb:.0f} MB")
    warm = tracker_warm(procs, work / "sqlite-warm", items, n,
                        work / "sqlite-warm" / "tracker.db", batch_size, poll)
    print(f"  tracker, daemon already running: {warm.seconds:7.2f} s (enqueue "
          f"{warm.detail['enqueue_seconds']:.2f} s), {warm.seconds / floor.seconds:.2f}x the "
          f"floor; {warm.note}", flush=True)
    emit_result(f"end to end {count_label(n)}, daemon running", "sqlite", warm.seconds,
                floor.seconds, "s", "report", None,
                f"enqueue {warm.detail['enqueue_seconds']:.2f} s into an idle `tracker run` "
                f"started before the clock; {warm.note}")
    emit_result(f"results export {count_label(n)}", "sqlite", d["export_seconds"], None, "s",
                "report", d["export_rss_mb"], "tracker results -o FILE (not in the ratio)")
    emit_result("database bytes per item", "sqlite", size / n, payload + output, "B", "report",
                None, f"after wal_checkpoint(TRUNCATE), {free:,} B of it free pages; floor = "
                f"input payload {payload:.0f} B + provider output line {output:.0f} B")


def postgresql_run(procs: Processes, work: Path, items: Path, n: int, poll: float) -> None:
    batch_size = math.ceil(n / PG_BATCHES)
    batches = math.ceil(n / batch_size)
    split = f"{batches}x{count_label(batch_size)}"
    for latency in (0.0, LATENCY):
        on = f", {latency * 1000:.0f} ms a call" if latency else ""
        print(f"PostgreSQL: {n:,} items in {batches} batches of {batch_size:,}, poll {poll:g} s"
              f"{on}, database {PG_DATABASE} (dropped at the end)", flush=True)
        floor = bare_sdk(procs, work / "pg-bare", items, n, batch_size, poll, latency)
        print(f"  bare SDK script: {floor.seconds:7.2f} s (peak RSS {floor.peak_rss_mb:.0f} MB)",
              flush=True)
        sides: dict[int, Side] = {}
        for workers in (1, 3):
            with pg_database(PG_DATABASE) as db_url:
                side = tracker(procs, work / f"pg-tracker-{workers}", items, n, db_url,
                               batch_size, poll, workers, latency=latency)
            sides[workers] = side
            d = side.detail
            print(f"  tracker, {workers} worker(s): {side.seconds:7.2f} s (enqueue "
                  f"{d['enqueue_seconds']:.2f} s, run {d['run_seconds']:.2f} s; peak RSS "
                  f"enqueue {d['enqueue_rss_mb']:.0f} MB, run {d['run_rss_mb']:.0f} MB), "
                  f"{side.seconds / floor.seconds:.2f}x the floor", flush=True)
            print(f"                   {side.note}", flush=True)
        print(f"  3 workers / 1 worker: {sides[3].seconds / sides[1].seconds:.2f}x")
        for workers, side in sides.items():
            d = side.detail
            emit_result(f"end to end {split}{on}, {workers} worker{'s' if workers > 1 else ''}",
                        "postgresql", side.seconds, floor.seconds, "s", "report",
                        side.peak_rss_mb, f"enqueue {d['enqueue_seconds']:.2f} s + run "
                        f"{d['run_seconds']:.2f} s; {side.note}; floor: bare script on the "
                        "same split")
        emit_result(f"3 workers vs 1{on}", "postgresql", sides[3].seconds, sides[1].seconds,
                    "s", "< 1x", None, f"{split}: 3-worker seconds / 1-worker seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--skip-pg", action="store_true",
                        help="leave PostgreSQL out (the same as --engine sqlite)")
    add_engine_option(parser)
    args = parser.parse_args()
    exit_on_sigterm()
    with exclusive("e2e"):
        run_all(args)


def run_all(args: argparse.Namespace) -> None:
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    work = (RUN_DIR / "e2e").resolve()
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("sqlite-bare", "sqlite-tracker", "sqlite-warm", "pg-bare", "pg-tracker-1",
                "pg-tracker-3"):
        (work / sub).mkdir(parents=True)
    items = items_file(args.items).resolve()
    procs = Processes()
    try:
        if args.engine != "postgresql":
            sqlite_run(procs, work, items, args.items, args.poll)
        if args.engine == "sqlite" or args.skip_pg:
            print("PostgreSQL rows skipped: "
                  f"{'--skip-pg' if args.skip_pg else '--engine sqlite'}")
            return
        # Asked only now, so that the parent process (whose peak `wait4` figures include,
        # see `harness.wait`) has not imported psycopg and SQLAlchemy during the SQLite rows.
        if selected_engines("postgresql"):
            postgresql_run(procs, work, items, args.items, args.poll)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
