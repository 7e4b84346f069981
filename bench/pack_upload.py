"""Pack + build + upload of one batch against a raw floor, on SQLite and PostgreSQL. Prints
figures; never passes or fails.

    python bench/pack_upload.py [--items 50000] [--engine sqlite|postgresql|both]

Set-up (not timed): N generated items (the JSONL input `enqueue.py` uses) enqueued into a
fresh tracker database; the fake OpenAI server (`python -m tracker.testing.fake_openai`) started
in a process of its own, shared by both sides.
1. The tracker: the real `pack(ctx)` step (one batch of N items: every item moved to
   `in_batch` with its history row) then the real `submit(ctx)` step, its provider pointed at
   the fake server: build the input file from the database (`provider.prepare_payloads`),
   upload it (`provider.upload_input`), record the upload, and create the batch (one small
   extra call the floor does not make). A breakdown (pack, build, upload, create, the rest:
   submit's own reads and writes) is printed besides the total.
2. The floor: `json.loads` of every line of the same JSONL input, `json.dumps` of the same
   request lines (custom_id, method, url, body with the model) to a file, and its upload with
   the `openai` SDK's `files.create` to the same fake server.
PostgreSQL runs when a server answers at `TRACKER_BENCH_PG_URL` (default
`postgresql+psycopg://postgres@127.0.0.1:5432/postgres`), in a database of its own
(`tracker_bench_pack`) dropped after each measurement.
Each side runs in its own process so peak RSS is its own (neither the fake server's nor the
PostgreSQL server's memory is counted); a run at N/10 items shows whether memory grows with N.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness import (
    API_KEY,
    MODEL,
    RUN_DIR,
    Processes,
    add_engine_option,
    count_label,
    database_url,
    emit_result,
    fake_server,
    items_file,
    peak_rss_mb,
    pg_database,
    remove_sqlite,
    report,
    rss_growth,
    run_child,
    selected_engines,
    tracker_config,
)

ENDPOINT = "/v1/chat/completions"
#: One batch holds at most this many requests (the OpenAI limit the tracker packs to).
MAX_ITEMS = 50_000


def prepare(path: Path, url: str) -> None:
    """Enqueue the items of `path` into a fresh tracker database at `url`."""
    from tracker.enqueue import enqueue_stream
    from tracker.store.engine import open_database

    engine = open_database(url)
    with path.open("rb") as stream:
        enqueue_stream(engine, stream, str(path), tracker_config(MAX_ITEMS), default_model=MODEL,
                       now=time.time())
    engine.dispose()


def run_tracker(url: str, base_url: str, n: int) -> dict[str, float]:
    from tracker.context import Context
    from tracker.providers.base import PreparedBatch, ProviderBatch, UploadedFile
    from tracker.providers.openai import OpenAIBatchProvider
    from tracker.steps import pack, submit
    from tracker.store.engine import open_database

    spent: dict[str, float] = {"build": 0.0, "upload": 0.0, "create": 0.0}
    uploaded_bytes: list[int] = []

    class Timed(OpenAIBatchProvider):
        """The real provider; it only notes how long its build, upload and create took."""

        def prepare_payloads(self, items: Iterable[Mapping[str, Any]], model: str, mode: str,
                             *, metadata: Mapping[str, str] | None = None,
                             directory: Path | None = None) -> PreparedBatch:
            start = time.perf_counter()
            try:
                prepared = super().prepare_payloads(items, model, mode, metadata=metadata,
                                                    directory=directory)
            finally:
                spent["build"] += time.perf_counter() - start
            uploaded_bytes.append(prepared.byte_size)
            return prepared

        def upload_input(self, prepared: PreparedBatch) -> UploadedFile:
            start = time.perf_counter()
            try:
                return super().upload_input(prepared)
            finally:
                spent["upload"] += time.perf_counter() - start

        def create_batch(self, input_file_id: str, endpoint: str,
                         metadata: Mapping[str, str]) -> ProviderBatch:
            start = time.perf_counter()
            try:
                return super().create_batch(input_file_id, endpoint, metadata)
            finally:
                spent["create"] += time.perf_counter() - start

    engine = open_database(url)
    config = tracker_config(n)
    provider = Timed({"api_key": API_KEY, "base_url": base_url, "max_retries": 0,
                      "models": [m.model_dump() for m in config.provider("openai").models]})
    work_dir = RUN_DIR / "pack-upload-work"
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(engine=engine, config=config, providers={"openai": provider},
                  work_dir=work_dir)
    start = time.perf_counter()
    packed = pack(ctx)
    packed_at = time.perf_counter()
    handled = submit(ctx)
    elapsed = time.perf_counter() - start
    assert packed == 1 and handled == 1, (packed, handled)
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT status, item_count, input_file_id FROM batches").one()
        in_batch = conn.exec_driver_sql(
            "SELECT count(*) FROM items WHERE status = 'in_batch'").scalar_one()
    engine.dispose()
    with contextlib.suppress(OSError):
        work_dir.rmdir()  # empty: submit removes the input file it built
    assert row.status == "submitted" and row.input_file_id, row
    assert row.item_count == in_batch, (row.item_count, in_batch)
    pack_seconds = packed_at - start
    return {"items": float(in_batch), "seconds": elapsed, "peak_rss_mb": peak_rss_mb(),
            "pack_seconds": pack_seconds, **{f"{k}_seconds": v for k, v in spent.items()},
            "rest_seconds": elapsed - pack_seconds - sum(spent.values()),
            "bytes": float(sum(uploaded_bytes))}


def run_floor(path: Path, base_url: str) -> dict[str, float]:
    import openai

    client = openai.OpenAI(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=120.0)
    request_file = RUN_DIR / "pack-upload-floor.jsonl"
    lines = 0
    start = time.perf_counter()
    with path.open("rb") as source, request_file.open("wb") as out:
        for raw in source:
            item = json.loads(raw)
            body = {"model": MODEL, **item["input_payload"]}
            out.write((json.dumps({"custom_id": item["id"], "method": "POST", "url": ENDPOINT,
                                   "body": body}, ensure_ascii=False, separators=(",", ":"))
                       + "\n").encode())
            lines += 1
    with request_file.open("rb") as fh:
        uploaded = client.files.create(file=(request_file.name, fh, "application/jsonl"),
                                       purpose="batch")
    elapsed = time.perf_counter() - start
    size = request_file.stat().st_size
    request_file.unlink()
    assert uploaded.bytes == size, (uploaded.bytes, size)
    return {"items": float(lines), "seconds": elapsed, "peak_rss_mb": peak_rss_mb(),
            "bytes": float(size)}


def child(kind: str, source: str, base_url: str, n: str) -> None:
    if kind == "tracker":
        figures = run_tracker(database_url(source), base_url, int(n))
    else:
        figures = run_floor(Path(source), base_url)
    print(json.dumps(figures))


def measure(engine: str, n: int, base_url: str) -> dict[str, dict[str, float]]:
    path = items_file(n)
    pair = {}
    if engine == "sqlite":
        db = RUN_DIR / f"pack-upload-{n}.db"
        remove_sqlite(db)
        try:
            prepare(path, database_url(str(db)))
            pair["tracker"] = run_child(__file__, "tracker", str(db), base_url, str(n))
        finally:
            remove_sqlite(db)
    else:
        with pg_database("tracker_bench_pack") as url:
            prepare(path, url)
            pair["tracker"] = run_child(__file__, "tracker", url, base_url, str(n))
    pair["floor"] = run_child(__file__, "floor", str(path), base_url, str(n))
    return pair


def breakdown(figures: Mapping[str, float]) -> str:
    parts = ("pack", "build", "upload", "create", "rest")
    return ", ".join(f"{part} {figures[f'{part}_seconds']:.2f} s" for part in parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=MAX_ITEMS,
                        help=f"items in the batch (at most {MAX_ITEMS:,}, one batch's limit)")
    add_engine_option(parser)
    parser.add_argument("--child", nargs=4, metavar=("KIND", "SOURCE", "BASE_URL", "N"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if not 1 <= args.items <= MAX_ITEMS:
        parser.error(f"--items must be 1..{MAX_ITEMS} (one batch)")
    RUN_DIR.mkdir(exist_ok=True)
    small, large = max(args.items // 10, 1), args.items
    engines = selected_engines(args.engine)
    server_dir = RUN_DIR / "pack-upload"
    server_dir.mkdir(exist_ok=True)
    with fake_server(Processes(), server_dir) as base_url:
        print(f"fake OpenAI server at {base_url}", flush=True)
        for engine in engines:
            print(f"-- pack + build + upload on {engine}", flush=True)
            results = {n: measure(engine, n, base_url) for n in (small, large)}
            for n, pair in results.items():
                assert pair["tracker"]["items"] == n and pair["floor"]["items"] == n, pair
            report(results, "lines", "pack + build + upload",
                   "raw json.dumps + files.create floor")
            for n, pair in results.items():
                print(f"{n:>9,} lines  tracker breakdown: {breakdown(pair['tracker'])}; "
                      f"file {pair['tracker']['bytes'] / 1e6:.1f} MB "
                      f"(floor's {pair['floor']['bytes'] / 1e6:.1f} MB)")
            tracker, floor = results[large]["tracker"], results[large]["floor"]
            emit_result(f"pack + build + upload {count_label(large)}", engine,
                        tracker["seconds"], floor["seconds"], "s", "<= 2x",
                        rss_mb=tracker["peak_rss_mb"],
                        note=f"{rss_growth(results, small, large)}; {breakdown(tracker)} "
                        "(tracker includes one create call)")


if __name__ == "__main__":
    main()
