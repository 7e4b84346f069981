"""Ingest throughput against a raw floor, on SQLite and PostgreSQL. Prints figures; never
passes or fails.

    python bench/ingest.py [--items 50000] [--engine sqlite|postgresql|both]

Set-up (not timed): N items enqueued and packed into one batch, the batch marked `completed`,
and an output file of N result lines in the Batch API's format, shuffled as real output files are
(the API keeps no order), written to disk.
1. The tracker: `ingest_batch` on that batch, its provider reading the file from disk instead
   of downloading it (the download is not what is measured): parse every line, decide every
   item's outcome, store outputs, usage and history in one transaction, close the batch.
2. The floor: on a copy of the same database with the item triggers dropped, `json.loads` of
   every line and one transaction of plain driver `executemany` (`sqlite3`, or psycopg 3 on
   PostgreSQL): the same item updates and one history row per item.
PostgreSQL runs when a server answers at `TRACKER_BENCH_PG_URL` (default
`postgresql+psycopg://postgres@127.0.0.1:5432/postgres`): the set-up goes into a database of its
own (`tracker_bench_ingest_prepared`), each side works on a copy of it made with
`CREATE DATABASE tracker_bench_ingest TEMPLATE ...`; all are dropped after.
Each runs in its own process so peak RSS is its own (the PostgreSQL server's memory is not
counted); a run at N/10 items shows whether memory grows with N.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness import (
    API_KEY,
    MODEL,
    RUN_DIR,
    add_engine_option,
    count_label,
    database_url,
    emit_result,
    libpq,
    peak_rss_mb,
    pg_database,
    remove_sqlite,
    report,
    rss_growth,
    run_child,
    selected_engines,
    tracker_config,
)


def prepare(n: int, url: str) -> None:
    """A database at `url` holding one completed batch of `n` items."""
    from tracker.context import Context
    from tracker.enqueue import enqueue_stream
    from tracker.states import BatchStatus
    from tracker.steps import pack
    from tracker.store.engine import open_database, write
    from tracker.store.transitions import move_batch

    engine = open_database(url)
    lines = "".join(json.dumps({"id": f"item-{i:08d}", "input_payload": {"messages": [
        {"role": "user", "content": f"Question number {i}: what is {i} + 1?"}]}}) + "\n"
        for i in range(n))
    config = tracker_config(n)
    enqueue_stream(engine, io.BytesIO(lines.encode()), "bench.jsonl", config,
                   default_model=MODEL, now=time.time())
    ctx = Context(engine=engine, config=config)
    assert pack(ctx) == 1
    with write(engine) as conn:
        batch_id = conn.exec_driver_sql("SELECT id FROM batches").scalar_one()
        move_batch(conn, batch_id, BatchStatus.PENDING, BatchStatus.COMPLETED, "bench",
                   time.time(), provider_batch_id="batch_bench", provider_status="completed",
                   request_total=n, request_completed=n, output_file_id="file-out")
    engine.dispose()


def write_output(n: int, output: Path) -> None:
    """The batch's output file: `n` result lines in the Batch API's format, in a shuffled order
    (the API does not keep the input's order; the fake server shuffles too)."""
    order = list(range(n))
    random.Random(n).shuffle(order)
    with output.open("w", encoding="utf-8") as out:
        for i in order:
            body = {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": MODEL,
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": f"The answer is {i + 1}."}}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}}
            out.write(json.dumps({"id": f"batch_req_{i}", "custom_id": f"item-{i:08d}",
                                  "response": {"status_code": 200, "request_id": f"r{i}",
                                               "body": body}, "error": None}) + "\n")


def run_tracker(url: str, output: Path) -> dict[str, float]:
    from tracker.context import Context
    from tracker.providers.base import ProviderBatch
    from tracker.providers.openai import (
        OpenAIBatchProvider,
        OpenAIFetchedResults,
        normalize_status,
    )
    from tracker.states import ENDED_BATCH
    from tracker.steps.ingest import ingest_batch
    from tracker.store.engine import open_database

    class FromDisk(OpenAIBatchProvider):
        """Reads the output file from disk: the download is not what is measured."""

        def fetch_results(self, provider_batch_id: str, *,
                          expected_custom_ids: Iterable[str] | None = None,
                          directory: Path | None = None,
                          skip_unavailable: bool = False,
                          last_seen: ProviderBatch | None = None) -> OpenAIFetchedResults:
            status = ProviderBatch(provider_batch_id, "completed",
                                   normalize_status("completed"))
            return OpenAIFetchedResults(status, output.parent, [output], expected_custom_ids,
                                        remove_directory=False)

    engine = open_database(url)
    n = sum(1 for _ in output.open("rb"))
    ctx = Context(engine=engine, config=tracker_config(n),
                  providers={"openai": FromDisk({"api_key": API_KEY})},
                  work_dir=RUN_DIR)
    [batch] = ctx.claim_due(ENDED_BATCH, "next_action_at")
    start = time.perf_counter()
    ingest_batch(ctx, batch)
    elapsed = time.perf_counter() - start
    with engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT count(*) FROM items WHERE status = 'succeeded' AND total_tokens = 26"
        ).scalar()
    engine.dispose()
    return {"items": float(stored or 0), "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


_UPDATE = ("UPDATE items SET status = ?, status_reason = ?, updated_at = ?, output_text = ?, "
           "output_data = ?, prompt_tokens = ?, completion_tokens = ?, total_tokens = ?, "
           "finished_at = ? WHERE id = ? AND status = 'in_batch'")
_HISTORY = ("INSERT INTO transitions (entity, entity_id, from_status, to_status, at, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)")


def _floor_rows(output: Path, now: float) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """`json.loads` of every line: the item updates and the history rows."""
    updates, history = [], []
    with output.open("rb") as stream:
        for raw in stream:
            line = json.loads(raw)
            body = line["response"]["body"]
            usage = body["usage"]
            updates.append(("succeeded", "result stored", now, body["choices"][0]["message"]
                            ["content"], json.dumps(body), usage["prompt_tokens"],
                            usage["completion_tokens"], usage["total_tokens"], now,
                            line["custom_id"]))
            history.append(("item", line["custom_id"], "in_batch", "succeeded", now,
                            "result stored"))
    return updates, history


def run_floor(db: Path, output: Path) -> dict[str, float]:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("DROP TRIGGER items_guard")
    conn.execute("DROP TRIGGER items_history")
    now = time.time()
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    updates, history = _floor_rows(output, now)
    conn.executemany(_UPDATE, updates)
    conn.executemany(_HISTORY, history)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    stored = conn.execute("SELECT count(*) FROM items WHERE status = 'succeeded'").fetchone()[0]
    return {"items": stored, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def run_floor_pg(url: str, output: Path) -> dict[str, float]:
    import psycopg

    with psycopg.connect(libpq(url), autocommit=True) as conn:
        for trigger in ("items_guard", "items_history", "items_moves"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger} ON items")
        now = time.time()
        start = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            updates, history = _floor_rows(output, now)
            cur.executemany(_UPDATE.replace("?", "%s").encode(), updates)
            cur.executemany(_HISTORY.replace("?", "%s").encode(), history)
        elapsed = time.perf_counter() - start
        found = conn.execute("SELECT count(*) FROM items WHERE status = 'succeeded'").fetchone()
    return {"items": float(found[0] if found else 0), "seconds": elapsed,
            "peak_rss_mb": peak_rss_mb()}


def child(kind: str, target: str, output: str) -> None:
    if kind == "tracker":
        figures = run_tracker(database_url(target), Path(output))
    elif target.startswith("postgresql"):
        figures = run_floor_pg(target, Path(output))
    else:
        figures = run_floor(Path(target), Path(output))
    print(json.dumps(figures))


def measure(kind: str, prepared: Path, output: Path) -> dict[str, float]:
    db = RUN_DIR / f"ingest-{kind}.db"
    remove_sqlite(db)
    shutil.copyfile(prepared, db)
    try:
        return run_child(__file__, kind, str(db), str(output))
    finally:
        remove_sqlite(db)


def measure_sqlite(n: int, output: Path) -> dict[str, dict[str, float]]:
    prepared = RUN_DIR / f"ingest-prepared-{n}.db"
    remove_sqlite(prepared)
    try:
        prepare(n, database_url(str(prepared)))
        return {kind: measure(kind, prepared, output) for kind in ("tracker", "floor")}
    finally:
        remove_sqlite(prepared)


def measure_pg(n: int, output: Path) -> dict[str, dict[str, float]]:
    template = "tracker_bench_ingest_prepared"
    pair = {}
    with pg_database(template) as prepared:
        prepare(n, prepared)
        for kind in ("tracker", "floor"):
            with pg_database("tracker_bench_ingest", template=template) as url:
                pair[kind] = run_child(__file__, kind, url, str(output))
    return pair


FLOORS = {"sqlite": "raw sqlite3 executemany floor", "postgresql": "raw psycopg executemany floor"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=50_000)
    add_engine_option(parser)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "DB", "OUTPUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    RUN_DIR.mkdir(exist_ok=True)
    small, large = max(args.items // 10, 1), args.items
    for engine in selected_engines(args.engine):
        print(f"-- ingest on {engine}", flush=True)
        results = {}
        for n in (small, large):
            output = RUN_DIR / f"output-{n}.jsonl"
            write_output(n, output)
            results[n] = (measure_sqlite if engine == "sqlite" else measure_pg)(n, output)
        for n, pair in results.items():
            assert pair["tracker"]["items"] == n and pair["floor"]["items"] == n, pair
        report(results, "lines", "ingest", FLOORS[engine])
        tracker, floor = results[large]["tracker"], results[large]["floor"]
        emit_result(f"ingest {count_label(large)} lines", engine, tracker["seconds"],
                    floor["seconds"], "s", "<= 2x", rss_mb=tracker["peak_rss_mb"],
                    note=rss_growth(results, small, large))


if __name__ == "__main__":
    main()
