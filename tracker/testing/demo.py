"""`make demo`: the main job end to end on the embedded defaults, against the fake Batch API.

Starts the fake server on loopback, then runs the real commands a user would run: enqueue the
sample prompts, `tracker run --until-idle`, `tracker status`, `tracker results`. No API key
needed. Everything lands in ./demo-run/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

RUN_DIR = Path("demo-run")
SAMPLES = Path(__file__).resolve().parents[1] / "config" / "sample_prompts.jsonl"


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], deadline: float) -> str:
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text().strip()
        if process.poll() is not None:
            sys.exit(f"the fake server exited with code {process.returncode}")
        time.sleep(0.05)
    sys.exit("the fake server did not start within 15 s")


def _tracker(env: dict[str, str], *args: str, capture: bool = False) -> str:
    print(f"\n$ tracker {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "tracker", *args], env=env, text=True,
        stdout=subprocess.PIPE if capture else None, check=False,
    )
    if done.returncode != 0:
        sys.exit(f"tracker {args[0]} exited with code {done.returncode}")
    return done.stdout or ""


def _show_audit(db: Path) -> None:
    """What an operator sees with plain SQL (README: "Auditing with SQL")."""
    with sqlite3.connect(db) as conn:
        print("\nSELECT from_status, to_status, reason FROM item_history "
              "WHERE item_id = 'sample-007'")
        for row in conn.execute("SELECT from_status, to_status, reason FROM item_history "
                                "WHERE item_id = 'sample-007' ORDER BY seq"):
            print(f"  {row[0] or '(new)':<9} -> {row[1]:<10} {row[2]}")
    print(f"\nthe database is {db}; the README's 'Auditing with SQL' has more queries")


#: The fake server misbehaves the way real providers are reported to; nothing runs twice.
EVENTUALLY_CONSISTENT = ["--batch-not-found-seconds", "0.5", "--late-files-seconds", "1.0"]


def main() -> None:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir()
    url_file = RUN_DIR / "fake-server-url"
    server = subprocess.Popen(
        [sys.executable, "-m", "tracker.testing.fake_openai", "--port-file", str(url_file),
         "--validating-seconds", "0.3", "--in-progress-seconds", "1.0",
         "--finalizing-seconds", "0.2", *EVENTUALLY_CONSISTENT],
        stdout=subprocess.DEVNULL,
    )
    try:
        base_url = _wait_for_file(url_file, server, time.monotonic() + 15)
        print(f"fake OpenAI Batch API on {base_url}, eventually consistent as real ones are: "
              "404 for 0.5 s after a create, result files named 1 s after the status")
        env = {**os.environ, "OPENAI_API_KEY": "sk-demo-not-a-real-key",
               "OPENAI_BASE_URL": base_url, "TRACKER_DB": f"sqlite:///{RUN_DIR}/tracker.db"}
        env.pop("TRACKER_CONFIG", None)
        _tracker(env, "enqueue", str(SAMPLES), "--model", "gpt-5-mini")
        _tracker(env, "run", "--until-idle", "--poll-interval", "0.2")
        _tracker(env, "status")
        out = _tracker(env, "results", capture=True)
        print(f"{'id':<12} {'status':<10} {'tries':>5}  output or error")
        for line in out.splitlines():
            record = json.loads(line)
            text = record["output_text"] or f"ERROR {record['error_message']}"
            print(f"{record['id']:<12} {record['status']:<10} {record['attempts']:>5}  "
                  f"{text[:70]}")
        _show_audit(RUN_DIR / "tracker.db")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
