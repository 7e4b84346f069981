"""Enqueue throughput against a raw floor, on SQLite and PostgreSQL. Prints figures; never
passes or fails.

    python bench/enqueue.py [--items 1000000] [--engine sqlite|postgresql|both]

1. Writes N generated items to a JSONL file.
2. `tracker enqueue`'s code path (`enqueue_stream`) into a fresh tracker database (migrated
   before the clock starts): every item row and its creation history row.
3. The floor: the same rows (parsed and serialized inside the timed region, as the tracker
   does) into a table with the same columns and primary key, in one transaction: plain
   `sqlite3` `executemany` on SQLite (same pragmas), psycopg 3 `COPY ... FROM STDIN` on
   PostgreSQL (what the tracker itself uses there). Item rows only: the floor writes no
   history rows.
PostgreSQL runs when a server answers at `TRACKER_BENCH_PG_URL` (default
`postgresql+psycopg://postgres@127.0.0.1:5432/postgres`); each measurement gets a fresh database
there (`tracker_bench_enqueue`, `tracker_bench_enqueue_floor`), dropped after it.
Each side runs in its own process so peak RSS is its own (the PostgreSQL server's memory is not
counted); a run at N/10 items shows whether memory grows with N.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

from harness import (
    MODEL,
    RUN_DIR,
    add_engine_option,
    count_label,
    database_url,
    emit_result,
    items_file,
    libpq,
    peak_rss_mb,
    pg_database,
    remove_sqlite,
    report,
    rss_growth,
    run_child,
    selected_engines,
)


def run_tracker(path: Path, target: str) -> dict[str, float]:
    from tracker.config import load_config
    from tracker.enqueue import enqueue_stream
    from tracker.store.engine import open_database

    engine = open_database(database_url(target))
    config = load_config()
    start = time.perf_counter()
    with path.open("rb") as stream:
        result = enqueue_stream(engine, stream, str(path), config, default_model=MODEL,
                                now=time.time())
    elapsed = time.perf_counter() - start
    engine.dispose()
    return {"items": result.enqueued, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def _floor_rows(path: Path, now: float) -> Iterator[tuple[object, ...]]:
    """The tracker's item rows, parsed and serialized as it does (without its validation)."""
    with path.open("rb") as stream:
        for raw in stream:
            item = json.loads(raw)
            payload = json.dumps(item["input_payload"], sort_keys=True, separators=(",", ":"))
            yield (item["id"], "openai", MODEL, payload, len(payload) // 4 + 1,
                   "queued", "enqueued", 0, 0.0, now, now)


def run_floor(path: Path, db: Path) -> dict[str, float]:
    import sqlite3

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE items (id TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT NOT NULL, "
        "payload TEXT NOT NULL, est_tokens INTEGER NOT NULL, status TEXT NOT NULL, "
        "status_reason TEXT, attempts INTEGER NOT NULL, not_before REAL NOT NULL, "
        "created_at REAL NOT NULL, updated_at REAL NOT NULL)")
    now = time.time()
    start = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     _floor_rows(path, now))
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    count = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    return {"items": count, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def run_floor_pg(path: Path, url: str) -> dict[str, float]:
    import psycopg

    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id TEXT PRIMARY KEY, provider TEXT NOT NULL, "
            "model TEXT NOT NULL, payload TEXT NOT NULL, est_tokens INTEGER NOT NULL, "
            "status TEXT NOT NULL, status_reason TEXT, attempts INTEGER NOT NULL, "
            "not_before DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
            "updated_at DOUBLE PRECISION NOT NULL)")
        now = time.time()
        start = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(
                "COPY items (id, provider, model, payload, est_tokens, status, status_reason, "
                "attempts, not_before, created_at, updated_at) FROM STDIN") as copy:
            for row in _floor_rows(path, now):
                copy.write_row(row)
        elapsed = time.perf_counter() - start
        found = conn.execute("SELECT count(*) FROM items").fetchone()
    return {"items": float(found[0] if found else 0), "seconds": elapsed,
            "peak_rss_mb": peak_rss_mb()}


def child(kind: str, path: str, target: str) -> None:
    if kind == "tracker":
        figures = run_tracker(Path(path), target)
    elif target.startswith("postgresql"):
        figures = run_floor_pg(Path(path), target)
    else:
        figures = run_floor(Path(path), Path(target))
    print(json.dumps(figures))


def measure(kind: str, path: Path, db: Path) -> dict[str, float]:
    remove_sqlite(db)
    return run_child(__file__, kind, str(path), str(db))


def measure_pg(kind: str, path: Path) -> dict[str, float]:
    name = "tracker_bench_enqueue" + ("" if kind == "tracker" else "_floor")
    with pg_database(name) as url:
        return run_child(__file__, kind, str(path), url)


FLOORS = {"sqlite": "raw sqlite3 executemany floor", "postgresql": "raw psycopg COPY floor"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    add_engine_option(parser)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "DB"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    RUN_DIR.mkdir(exist_ok=True)
    small, large = max(args.items // 10, 1), args.items
    for engine in selected_engines(args.engine):
        print(f"-- enqueue on {engine}", flush=True)
        results = {}
        for n in (small, large):
            path = items_file(n)
            if engine == "sqlite":
                dbs = {kind: RUN_DIR / f"{kind}-{n}.db" for kind in ("tracker", "floor")}
                try:
                    results[n] = {kind: measure(kind, path, db) for kind, db in dbs.items()}
                finally:
                    for db in dbs.values():
                        remove_sqlite(db)
            else:
                results[n] = {kind: measure_pg(kind, path) for kind in ("tracker", "floor")}
        report(results, "items", "enqueue", FLOORS[engine])
        tracker, floor = results[large]["tracker"], results[large]["floor"]
        emit_result(f"enqueue {count_label(large)} items", engine, tracker["seconds"],
                    floor["seconds"], "s", "<= 2x", rss_mb=tracker["peak_rss_mb"],
                    note=rss_growth(results, small, large) + "; floor: "
                    + ("executemany" if engine == "sqlite" else "COPY")
                    + " of the item rows only (the tracker also writes a history row each)")


if __name__ == "__main__":
    main()
