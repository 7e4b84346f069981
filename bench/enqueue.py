"""Enqueue throughput against the raw SQLite floor. Prints figures; never passes or fails.

    python bench/enqueue.py [--items 1000000]

1. Writes N generated items to a JSONL file.
2. `tracker enqueue`'s code path (`enqueue_stream`) into a fresh tracker database.
3. The floor: plain `sqlite3` `executemany` of the same rows (already parsed) into a table with
   the same columns and primary key, in one transaction, same pragmas.
Each runs in its own process so peak RSS is its own; a run at N/10 items shows whether memory
grows with N.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness import RUN_DIR, peak_rss_mb, report, run_child


def generate(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            item = {"id": f"item-{i:08d}", "input_payload": {
                "messages": [{"role": "user", "content": f"Question number {i}: what is {i} + 1?"}],
                "max_tokens": 50}}
            out.write(json.dumps(item) + "\n")


def run_tracker(path: Path, db: Path) -> dict[str, float]:
    from tracker.config import load_config
    from tracker.enqueue import enqueue_stream
    from tracker.store.engine import open_database

    engine = open_database(f"sqlite:///{db}")
    config = load_config()
    start = time.perf_counter()
    with path.open("rb") as stream:
        result = enqueue_stream(engine, stream, str(path), config, default_model="gpt-5-mini",
                                now=time.time())
    elapsed = time.perf_counter() - start
    return {"items": result.enqueued, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


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

    def rows():  # the same rows, parsed outside the timed region's per-row validation
        with path.open("rb") as stream:
            for raw in stream:
                item = json.loads(raw)
                payload = json.dumps(item["input_payload"], sort_keys=True,
                                     separators=(",", ":"))
                yield (item["id"], "openai", "gpt-5-mini", payload, len(payload) // 4 + 1,
                       "queued", "enqueued", 0, 0.0, now, now)

    start = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    count = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    return {"items": count, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def child(kind: str, path: str, db: str) -> None:
    figures = (run_tracker if kind == "tracker" else run_floor)(Path(path), Path(db))
    print(json.dumps(figures))


def measure(kind: str, path: Path, db: Path) -> dict[str, float]:
    db.unlink(missing_ok=True)
    return run_child(__file__, kind, str(path), str(db))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "DB"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    RUN_DIR.mkdir(exist_ok=True)
    small, large = max(args.items // 10, 1), args.items
    results = {}
    for n in (small, large):
        path = RUN_DIR / f"items-{n}.jsonl"
        if not path.exists():
            generate(path, n)
        results[n] = {kind: measure(kind, path, RUN_DIR / f"{kind}-{n}.db")
                      for kind in ("tracker", "floor")}
    report(results, "items", "enqueue", "raw sqlite3 floor")


if __name__ == "__main__":
    main()
