"""`tracker show ID`: an item or a batch with its whole history, as text and as JSON, after a
real `tracker run` against the fake Batch API, on either engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.test_crash import Tracker, _wait
from tracker.testing.fake_openai import FakeOpenAI


def test_show__an_item_and_its_batch_with_their_history(tmp_path: Path, db_url: str) -> None:
    with FakeOpenAI(validating_seconds=0, in_progress_seconds=0,
                    finalizing_seconds=0) as server:
        tracker = Tracker(tmp_path, server, max_prompts=5, db_url=db_url)
        tracker.enqueue_items({"ok": "hello", "bad": "no [fail:400]"})
        assert _wait(tracker.start()) == 0
        item = json.loads(tracker.cli("show", "bad", "--json"))["item"]
        assert item["status"] == "failed" and item["error_status"] == 400
        assert item["payload"] == {"messages": [{"role": "user", "content": "no [fail:400]"}]}
        assert item["job"] == "stdin" and item["metadata"] is None
        assert [(t["from"], t["to"]) for t in item["transitions"]] == [
            (None, "queued"), ("queued", "in_batch"), ("in_batch", "failed")]
        provider_batch_id = item["provider_batch_id"]

        batch = json.loads(tracker.cli("show", provider_batch_id, "--json"))["batch"]
        assert batch["id"] == item["batch_id"] and batch["status"] == "ingested"
        assert batch["items_by_status"] == {"failed": 1, "succeeded": 1}
        assert [t["to"] for t in batch["transitions"]] == [
            "pending", "submitted", "completed", "ingested"]
        assert {d["kind"] for d in batch["file_deletions"]} == {"input", "output", "error"}
        assert json.loads(tracker.cli("show", batch["id"], "--json"))["batch"] == batch

        text = tracker.cli("show", "ok")
        assert text.startswith("item ok: succeeded")
        assert "output: echo: hello" in text and "in_batch -> succeeded" in text
        assert f"batch {batch['id']}: ingested" in tracker.cli("show", batch["id"])
        tracker.close()

    missing = subprocess.run([sys.executable, "-m", "tracker", "show", "nothing-here"],
                             env=tracker.env, cwd=tracker.cwd, capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "Error: no item or batch has the id 'nothing-here'"
