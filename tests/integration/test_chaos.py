"""All faults at once: the daemon (a real process, SIGKILLed again and again) against a fake
Batch API that throws HTTP errors, drops connections before and after doing the work (ghost
creates), truncates downloads and expires batches, with per-line failures in the input."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_crash import Tracker, _wait, run_with_kills
from tracker.testing.fake_openai import FakeOpenAI, Fault

KINDS = {  # marker in the prompt -> (expected status, expected attempts or None)
    "": ("succeeded", None),
    "[fail:400]": ("failed", 1),  # permanent: fails at once with the provider's message
    "[fail-once:500]": ("succeeded", 2),  # transient: succeeds when sent again
    "[fail:500]": ("failed", 3),  # transient every time: fails after max_attempts
    "[slow]": ("failed", 3),  # never finishes: expires every time
    "[surrogate]": ("succeeded", None),  # its output holds a lone surrogate
}
#: Eventual consistency, on for every batch: files named a while after the status, 404s right
#: after create and on fresh result files, a list that lags, cancels of ended batches
#: refused with 400 (as OpenAI-compatible servers do).
SWITCHES = {"late_files_seconds": 0.3, "list_lag_seconds": 0.3, "batch_not_found_seconds": 0.2,
            "file_not_found_seconds": 0.2, "cancel_refusal_status": 400}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(validating_seconds=0.1, in_progress_seconds=0.3, finalizing_seconds=0.1,
                    completion_window_seconds=2.0, seed=7, **SWITCHES) as fake:  # type: ignore[arg-type]
        fake.set_random_faults(0.15, seed=11)
        # ...and each kind at least twice for certain, on top of the random ones
        for fault in (
            Fault(method="POST", path="/v1/batches", kind="drop_after", times=2, skip=1),
            Fault(method="GET", path="/v1/files/*/content", kind="truncate", times=2),
            Fault(method="POST", path="/v1/files", kind="drop_before", times=2, skip=2),
            Fault(method="GET", path="/v1/batches/*", status=429,
                  headers={"retry-after": "0.2"}, times=2, skip=3),
            Fault(method="GET", path="/v1/batches", status=503, times=2),
        ):
            fake.add_fault(fault)
        yield fake


def test_chaos__every_fault_and_repeated_sigkills(server: FakeOpenAI, tmp_path: Path,
                                                  db_url: str) -> None:
    rng = random.Random(42)
    plan: dict[str, str] = {}
    for i in range(200):
        marker = rng.choices(list(KINDS), weights=[76, 5, 6, 5, 4, 4])[0]
        plan[f"item-{i:04d}"] = marker
    tracker = Tracker(tmp_path, server, max_prompts=20, db_url=db_url)
    tracker.enqueue_items({item_id: f"question {item_id} {marker}".strip()
                           for item_id, marker in plan.items()})
    kills = run_with_kills(tracker, rng, 10, step=(5, 60))
    assert _wait(tracker.start(), timeout=300) == 0, tracker.log.read_text()[-4000:]

    stored = {row[0]: row[1:] for row in tracker.query(
        "SELECT id, status, attempts, error_code, error_status FROM items")}
    for item_id, marker in plan.items():
        status, attempts, error_code, error_status = stored[item_id]
        want_status, want_attempts = KINDS[marker]
        assert status == want_status, (item_id, marker, stored[item_id])
        if want_attempts is not None:
            assert attempts == want_attempts, (item_id, marker, stored[item_id])
        if marker == "[slow]":
            assert error_code == "batch_expired"
        if marker == "[fail:400]":
            assert error_status == 400
    # exactly one terminal outcome per item
    outcomes = tracker.query("SELECT entity_id, count(*) FROM transitions WHERE entity = 'item' "
                             "AND to_status IN ('succeeded', 'failed') GROUP BY entity_id")
    assert len(outcomes) == len(plan) and {c for _, c in outcomes} == {1}
    # no item ran successfully in two provider batches whose results were both kept
    kept = {row[0] for row in tracker.query(
        "SELECT provider_batch_id FROM batches WHERE duplicate_of IS NULL AND "
        "provider_batch_id IS NOT NULL")}
    successes = Counter(custom_id for batch_id, custom_id, outcome in server.executions
                        if outcome == "success" and batch_id in kept)
    assert max(successes.values()) == 1
    # no duplicate batch left running at the provider
    for batch_id in server.batches:
        assert server.get_batch(batch_id)["status"] in ("completed", "failed", "expired",
                                                        "cancelled")
    duplicates = tracker.query("SELECT count(*) FROM batches WHERE duplicate_of IS NOT NULL")
    figures = {
        "items": len(plan),
        "markers": dict(Counter(m or "plain" for m in plan.values())),
        "faults": dict(server.fault_counts),
        "switches": SWITCHES,
        "answered_404": sum(1 for _, _, status in server.requests if status == 404),
        "kills": kills,
        "provider_batches": len(server.batches),
        "duplicates_cancelled": duplicates[0][0],
        "outcomes": dict(Counter(s[0] for s in stored.values())),
    }
    print(f"chaos figures: {figures}")
    assert kills >= 5
    assert figures["answered_404"] > 0
    assert all(server.fault_counts[kind] >= 2 for kind in
               ("drop_after", "truncate", "drop_before", "http_error"))
