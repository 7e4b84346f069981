"""The floor of `bench/e2e.py`: the script a user writes by hand with the bare `openai` SDK.

    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 OPENAI_API_KEY=sk-... \\
        python bench/bare_sdk.py ITEMS.jsonl OUT_DIR [--model gpt-5-mini] \\
        [--batch-size 50000] [--poll 0.5]

It keeps no state at all: no database, nothing to resume from, no retries beyond the SDK's own,
no check of what comes back. It
1. reads the items (the tracker's input format: one `{"id": ..., "input_payload": {...}}` a
   line) and writes the Batch API's request lines, the same lines the tracker writes, into
   files of at most `--batch-size` lines (OUT_DIR/input-K.jsonl);
2. uploads each file (`files.create`) and creates a batch for it (`batches.create`);
3. every `--poll` seconds retrieves every batch not yet done (`batches.retrieve`) and, once one
   is `completed`, streams its output file (and error file, if any) to OUT_DIR;
4. exits once every batch is downloaded, printing one JSON line: batches, seconds (from its
   start to the last download), its own peak RSS (`VmHWM`; the one measuring line a user's
   script would not have).
A batch that ends any other way than `completed` stops the script with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Final

from openai import OpenAI

ENDPOINT: Final = "/v1/chat/completions"


def request_line(item: dict[str, Any], model: str) -> str:
    """One Batch API request line, as the tracker writes it."""
    payload = item["input_payload"]
    body = {"model": model, **{k: v for k, v in payload.items() if k != "model"}}
    line = {"custom_id": item["id"], "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_inputs(items: Path, out_dir: Path, model: str, batch_size: int) -> list[Path]:
    """The request lines, in files of at most `batch_size` lines."""
    files: list[Path] = []
    out = None
    count = 0
    try:
        with items.open("rb") as source:
            for raw in source:
                if not raw.strip():
                    continue
                if out is None or count == batch_size:
                    if out is not None:
                        out.close()
                    files.append(out_dir / f"input-{len(files) + 1}.jsonl")
                    out = files[-1].open("w", encoding="utf-8")
                    count = 0
                out.write(request_line(json.loads(raw), model))
                count += 1
    finally:
        if out is not None:
            out.close()
    return files


def peak_rss_mb() -> float:
    """This process's own peak RSS: `VmHWM` (Linux). `ru_maxrss` would not do: a process
    started by `subprocess` keeps in it its parent's peak when that was higher."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: as close


def download(client: OpenAI, file_id: str, path: Path) -> None:
    with client.files.with_streaming_response.content(file_id) as response:
        response.stream_to_file(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("items", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--model", default="gpt-5-mini")
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args()
    start = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    client = OpenAI()  # OPENAI_API_KEY and OPENAI_BASE_URL from the environment

    inputs = write_inputs(args.items, args.out_dir, args.model, args.batch_size)
    running: dict[str, int] = {}  # batch id -> its input file's number
    for number, path in enumerate(inputs, start=1):
        with path.open("rb") as fh:
            uploaded = client.files.create(file=(path.name, fh, "application/jsonl"),
                                           purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT,
                                      completion_window="24h")
        running[batch.id] = number

    while running:
        for batch_id, number in list(running.items()):
            batch = client.batches.retrieve(batch_id)
            if batch.status in ("validating", "in_progress", "finalizing"):
                continue
            if batch.status != "completed":
                sys.exit(f"batch {batch_id} ended {batch.status}: {batch.errors}")
            for kind, file_id in (("output", batch.output_file_id),
                                  ("error", batch.error_file_id)):
                if file_id:
                    download(client, file_id, args.out_dir / f"{kind}-{number}.jsonl")
            del running[batch_id]
        if running:
            time.sleep(args.poll)

    print(json.dumps({
        "batches": len(inputs), "seconds": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
