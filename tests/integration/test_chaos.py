"""All faults at once: the daemon (a real process, SIGKILLed again and again) against a fake
Batch API that throws HTTP errors, drops connections before and after doing the work (ghost
creates), truncates downloads and expires batches, with per-line failures in the input. Once
per provider kind: OpenAI (input file, batches found again by metadata) and Anthropic (requests
inline, batches found again by the provider's clock and request count)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon_kinds import ANTHROPIC, FINAL, OPENAI, DaemonKind
from tests.integration.test_crash import Tracker, _wait, run_with_kills
from tracker.testing.fake_http import FakeHttpServer, Fault


@dataclass(frozen=True)
class Chaos:
    """One kind's chaos: the markers in the prompts, the fake's switches and faults."""

    #: marker in the prompt -> (expected status, expected attempts or None, its weight)
    markers: dict[str, tuple[str, int | None, int]]
    #: Eventual consistency, on for every batch (the fake's keyword arguments).
    switches: dict[str, Any]
    #: The fake's other options (its lifecycle times).
    options: dict[str, Any]
    #: Scripted faults, on top of the random ones.
    faults: tuple[Fault, ...]
    #: Fault kinds that must have fired at least twice.
    required: tuple[str, ...]
    #: HTTP error statuses that must have been answered at least once.
    required_statuses: tuple[int, ...] = ()
    #: Rate of random faults (a fake that has them).
    random_rate: float = 0.0
    items: int = 200
    max_prompts: int = 20
    kills: int = 10


OPENAI_CHAOS = Chaos(
    markers={
        "": ("succeeded", None, 76),
        "[fail:400]": ("failed", 1, 5),  # permanent: fails at once with the provider's message
        "[fail-once:500]": ("succeeded", 2, 6),  # transient: succeeds when sent again
        "[fail:500]": ("failed", 3, 5),  # transient every time: fails after max_attempts
        "[slow]": ("failed", 3, 4),  # never finishes: expires every time
        "[surrogate]": ("succeeded", None, 4),  # its output holds a lone surrogate
    },
    # Files named a while after the status, 404s right after create and on fresh result
    # files, a list that lags, cancels of ended batches refused with 400 (as
    # OpenAI-compatible servers do).
    switches={"late_files_seconds": 0.3, "list_lag_seconds": 0.3,
              "batch_not_found_seconds": 0.2, "file_not_found_seconds": 0.2,
              "cancel_refusal_status": 400},
    options={"validating_seconds": 0.1, "in_progress_seconds": 0.3,
             "finalizing_seconds": 0.1, "completion_window_seconds": 2.0, "seed": 7},
    faults=(  # each kind at least twice for certain, on top of the random ones
        Fault(method="POST", path="/v1/batches", kind="drop_after", times=2, skip=1),
        Fault(method="GET", path="/v1/files/*/content", kind="truncate", times=2),
        Fault(method="POST", path="/v1/files", kind="drop_before", times=2, skip=2),
        Fault(method="GET", path="/v1/batches/*", status=429,
              headers={"retry-after": "0.2"}, times=2, skip=3),
        Fault(method="GET", path="/v1/batches", status=503, times=2),
    ),
    required=("drop_after", "truncate", "drop_before", "http_error"),
    random_rate=0.15,
)

_BATCHES = ANTHROPIC.create_path  # create (POST) and list (GET)
ANTHROPIC_CHAOS = Chaos(
    markers={
        "": ("succeeded", None, 80),
        "[fail:400]": ("failed", 1, 5),  # errored, invalid_request_error: fails at once
        "[fail:500]": ("failed", 3, 5),  # errored, api_error: retried, fails after 3
        "[fail:529]": ("failed", 3, 3),  # errored, overloaded_error: likewise
        "[slow]": ("failed", 3, 4),  # never finishes: its batch expires every time
    },
    # Retrieve 404s right after the create, results that 404 right after the end, a list
    # that lags (less than the tracker's list_lag_grace of 1 s: no second create is due).
    switches={"list_lag_seconds": 0.3, "batch_not_found_seconds": 0.2,
              "results_not_found_seconds": 0.2},
    options={"in_progress_seconds": 0.3, "canceling_seconds": 0.1, "expiry_seconds": 2.0,
             "seed": 7},
    faults=(
        # Lost create answers: the batch is made, the connection closes (reconciled by the
        # provider's clock and the request count).
        Fault(method="POST", path=_BATCHES, kind="drop_after", times=2, skip=1),
        # Creates refused (nothing made) or dropped unanswered (nothing made, but the tracker
        # cannot know): 429 with a retry hint, 529 overloaded, 500.
        Fault(method="POST", path=_BATCHES, kind="drop_before", times=1, skip=2),
        Fault(method="POST", path=_BATCHES, status=429, headers={"retry-after": "0.2"},
              times=1, skip=2),
        Fault(method="POST", path=_BATCHES, status=529, times=1, skip=2),
        Fault(method="POST", path=_BATCHES, status=500, times=1, skip=2),
        # Retrieves and results downloads: 429, 529, 500 now and then; cut downloads.
        Fault(method="GET", path=ANTHROPIC.results_path, kind="truncate", times=2, skip=1),
        Fault(method="GET", path=ANTHROPIC.batch_path, status=429,
              headers={"retry-after": "0.2"}, times=None, skip=3, every=11),
        Fault(method="GET", path=ANTHROPIC.batch_path, status=529,
              headers={"retry-after": "0.1"}, times=None, skip=5, every=17),
        Fault(method="GET", path=ANTHROPIC.batch_path, status=500,
              headers={"retry-after": "0.1"}, times=None, skip=7, every=23),
        # The list (reconcile, the provider's clock): overloaded twice.
        Fault(method="GET", path=_BATCHES, status=529, headers={"retry-after": "0.1"},
              times=2, skip=1),
    ),
    required=("drop_after", "truncate", "http_error"),
    required_statuses=(404, 429, 500, 529),
)

CHAOS = {OPENAI.name: OPENAI_CHAOS, ANTHROPIC.name: ANTHROPIC_CHAOS}


@pytest.fixture
def server(kind: DaemonKind) -> Iterator[FakeHttpServer]:
    chaos = CHAOS[kind.name]
    with kind.make_fake(**chaos.options, **chaos.switches) as fake:
        if chaos.random_rate:
            fake.set_random_faults(chaos.random_rate, seed=11)
        for fault in chaos.faults:
            fake.add_fault(Fault(**vars(fault)))  # a copy: faults count down as they fire
        yield fake


@pytest.mark.parametrize("kind", [OPENAI, ANTHROPIC], ids=str)
def test_chaos__every_fault_and_repeated_sigkills(kind: DaemonKind, server: Any,
                                                  tmp_path: Path, db_url: str) -> None:
    chaos = CHAOS[kind.name]
    rng = random.Random(42)
    markers = list(chaos.markers)
    weights = [weight for _, _, weight in chaos.markers.values()]
    plan: dict[str, str] = {}
    for i in range(chaos.items):
        plan[f"item-{i:04d}"] = rng.choices(markers, weights=weights)[0]
    tracker = Tracker(tmp_path, server, max_prompts=chaos.max_prompts, db_url=db_url,
                      kind=kind)
    tracker.enqueue_items({item_id: f"question {item_id} {marker}".strip()
                           for item_id, marker in plan.items()})
    kills = run_with_kills(tracker, rng, chaos.kills, step=(5, 60))
    assert _wait(tracker.start(), timeout=300) == 0, tracker.log.read_text()[-4000:]

    stored = {row[0]: row[1:] for row in tracker.query(
        "SELECT id, status, attempts, error_code, error_status FROM items")}
    for item_id, marker in plan.items():
        status, attempts, error_code, error_status = stored[item_id]
        want_status, want_attempts, _ = chaos.markers[marker]
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
    executions = server.executions
    successes = Counter(custom_id for batch_id, custom_id, outcome in executions
                        if outcome == kind.succeeded and batch_id in kept)
    assert max(successes.values()) == 1
    # Nothing paid for twice: each item that succeeded ran successfully exactly once at the
    # provider, in any batch (duplicates too), and the others never did.
    paid = Counter(custom_id for _, custom_id, outcome in executions
                   if outcome == kind.succeeded)
    succeeded = Counter(item_id for item_id, row in stored.items() if row[0] == "succeeded")
    assert paid == succeeded, ((paid - succeeded).most_common(5),
                               (succeeded - paid).most_common(5))
    # no duplicate batch left running at the provider
    for batch_id in server.batches:
        assert kind.final_status(server, batch_id) in FINAL, batch_id
    duplicates = tracker.query("SELECT count(*) FROM batches WHERE duplicate_of IS NOT NULL")
    answered = Counter(status for _, _, status in server.requests)
    figures = {
        "kind": kind.name,
        "items": len(plan),
        "markers": dict(Counter(m or "plain" for m in plan.values())),
        "faults": dict(server.fault_counts),
        "switches": chaos.switches,
        "answered": {status: answered[status] for status in (404, 429, 500, 503, 529)
                     if answered[status]},
        "dropped": answered[None],
        "creates": server.count_requests("POST", kind.create_path),
        "kills": kills,
        "provider_batches": len(server.batches),
        "duplicates_cancelled": duplicates[0][0],
        "outcomes": dict(Counter(s[0] for s in stored.values())),
    }
    print(f"chaos figures: {figures}")
    assert kills >= 5
    assert answered[404] > 0
    assert all(server.fault_counts[fault] >= 2 for fault in chaos.required), figures
    assert all(answered[status] >= 1 for status in chaos.required_statuses), figures
