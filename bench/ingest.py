"""Ingest throughput against a raw SQLite floor. Prints figures; never passes or fails.

    python bench/ingest.py [--items 50000]

Set-up (not timed): N items enqueued and packed into one batch, the batch marked `completed`,
and an output file of N result lines in the Batch API's format written to disk.
1. The tracker: `ingest_batch` on that batch, its provider reading the file from disk instead
   of downloading it (the download is not what is measured): parse every line, decide every
   item's outcome, store outputs, usage and history in one transaction, close the batch.
2. The floor: on a copy of the same database with the item triggers dropped, `json.loads` of
   every line and one transaction of plain `sqlite3` `executemany`: the same item updates and
   one history row per item.
Each runs in its own process so peak RSS is its own; a run at N/10 items shows whether memory
grows with N.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from harness import RUN_DIR, peak_rss_mb, report, run_child

MODEL = "gpt-5-mini"


def _config(n: int) -> Any:
    from tracker.config import TrackerConfig

    return TrackerConfig.model_validate({"batch": {"providers": {"openai": {
        "models": [{"name": MODEL, "max_prompts_per_batch": n}]}}}})


def prepare(n: int, db: Path, output: Path) -> None:
    """A database holding one completed batch of `n` items, and its output file."""
    from tracker.context import Context
    from tracker.enqueue import enqueue_stream
    from tracker.states import BatchStatus
    from tracker.steps import pack
    from tracker.store.engine import open_database, write
    from tracker.store.transitions import move_batch

    db.unlink(missing_ok=True)
    engine = open_database(f"sqlite:///{db}")
    lines = "".join(json.dumps({"id": f"item-{i:08d}", "input_payload": {"messages": [
        {"role": "user", "content": f"Question number {i}: what is {i} + 1?"}]}}) + "\n"
        for i in range(n))
    config = _config(n)
    enqueue_stream(engine, io.BytesIO(lines.encode()), "bench.jsonl", config,
                   default_model=MODEL, now=time.time())
    ctx = Context(engine=engine, config=config)
    assert pack(ctx) == 1
    with write(engine) as conn:
        batch_id = conn.exec_driver_sql("SELECT id FROM batches").scalar_one()
        move_batch(conn, batch_id, BatchStatus.PENDING, BatchStatus.COMPLETED, "bench",
                   time.time(), provider_batch_id="batch_bench", provider_status="completed",
                   request_total=n, request_completed=n, output_file_id="file-out")
    with output.open("w", encoding="utf-8") as out:
        for i in range(n):
            body = {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": MODEL,
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": f"The answer is {i + 1}."}}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}}
            out.write(json.dumps({"id": f"batch_req_{i}", "custom_id": f"item-{i:08d}",
                                  "response": {"status_code": 200, "request_id": f"r{i}",
                                               "body": body}, "error": None}) + "\n")
    engine.dispose()


def run_tracker(db: Path, output: Path) -> dict[str, float]:
    from tracker.context import Context
    from tracker.providers.base import FetchedResults, ProviderBatch
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

        def fetch_results(self, provider_batch_id: str, **kwargs: Any) -> FetchedResults:
            status = ProviderBatch(provider_batch_id, "completed",
                                   normalize_status("completed"))
            return OpenAIFetchedResults(status, output.parent, [output],
                                        kwargs.get("expected_custom_ids"),
                                        remove_directory=False)

    engine = open_database(f"sqlite:///{db}")
    n = sum(1 for _ in output.open("rb"))
    ctx = Context(engine=engine, config=_config(n),
                  providers={"openai": FromDisk({"api_key": "sk-bench-0123456789"})},
                  work_dir=RUN_DIR)
    [batch] = ctx.claim_due(ENDED_BATCH, "next_action_at")
    start = time.perf_counter()
    ingest_batch(ctx, batch)
    elapsed = time.perf_counter() - start
    stored = engine.connect().exec_driver_sql(
        "SELECT count(*) FROM items WHERE status = 'succeeded' AND total_tokens = 26").scalar()
    return {"items": float(stored or 0), "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def run_floor(db: Path, output: Path) -> dict[str, float]:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("DROP TRIGGER items_guard")
    conn.execute("DROP TRIGGER items_history")
    now = time.time()

    def lines() -> Any:
        with output.open("rb") as stream:
            for raw in stream:
                yield json.loads(raw)

    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    updates, history = [], []
    for line in lines():
        body = line["response"]["body"]
        usage = body["usage"]
        updates.append(("succeeded", "result stored", now, body["choices"][0]["message"]
                        ["content"], json.dumps(body), usage["prompt_tokens"],
                        usage["completion_tokens"], usage["total_tokens"], now,
                        line["custom_id"]))
        history.append(("item", line["custom_id"], "in_batch", "succeeded", now,
                        "result stored"))
    conn.executemany("UPDATE items SET status = ?, status_reason = ?, updated_at = ?, "
                     "output_text = ?, output_data = ?, prompt_tokens = ?, "
                     "completion_tokens = ?, total_tokens = ?, finished_at = ? "
                     "WHERE id = ? AND status = 'in_batch'", updates)
    conn.executemany("INSERT INTO transitions (entity, entity_id, from_status, to_status, at, "
                     "reason) VALUES (?, ?, ?, ?, ?, ?)", history)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    stored = conn.execute("SELECT count(*) FROM items WHERE status = 'succeeded'").fetchone()[0]
    return {"items": stored, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def child(kind: str, db: str, output: str) -> None:
    figures = (run_tracker if kind == "tracker" else run_floor)(Path(db), Path(output))
    print(json.dumps(figures))


def measure(kind: str, prepared: Path, output: Path) -> dict[str, float]:
    db = RUN_DIR / f"ingest-{kind}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(prepared, db)
    return run_child(__file__, kind, str(db), str(output))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "DB", "OUTPUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    RUN_DIR.mkdir(exist_ok=True)
    small, large = max(args.items // 10, 1), args.items
    results = {}
    for n in (small, large):
        prepared, output = RUN_DIR / f"ingest-prepared-{n}.db", RUN_DIR / f"output-{n}.jsonl"
        prepare(n, prepared, output)
        results[n] = {kind: measure(kind, prepared, output) for kind in ("tracker", "floor")}
    for n, pair in results.items():
        assert pair["tracker"]["items"] == n and pair["floor"]["items"] == n, pair
    report(results, "lines", "ingest", "raw sqlite3 floor")


if __name__ == "__main__":
    main()
