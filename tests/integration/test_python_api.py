"""The Python API (`tracker.Tracker`): the example as a real program, and each method against
the fake Batch API over HTTP (real clock, real daemon in this process) on either engine."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tracker import CancelResult, Result, Tracker
from tracker.enqueue import DEFAULT_JOB, EnqueueResult
from tracker.errors import InputError
from tracker.states import ItemStatus
from tracker.store import engine
from tracker.store.reports import RESULT_FIELDS
from tracker.testing.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gpt-5-mini"
#: Seconds a test waits for something that takes well under one.
DEADLINE = 30.0
#: What every variable the example or the tracker reads from the environment is stripped to.
OWN_ENVIRONMENT = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TRACKER_CONFIG", "TRACKER_DB")


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(validating_seconds=0.1, in_progress_seconds=0.3,
                    finalizing_seconds=0.1) as server:
        yield server


@pytest.fixture
def tracker(db_url: str, fake: FakeOpenAI, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracker]:
    """A `Tracker` on a fresh database, its provider pointed at `fake`."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-api-test-0123456789")
    config = tmp_path / "llm_config.yaml"
    config.write_text(
        "batch:\n  providers:\n    openai:\n      list_lag_grace: 1.0\n      models:\n"
        f"        - name: {MODEL}\n          mode: chat\n          max_prompts_per_batch: 10\n"
        "          pricing_tier: batch\n")
    with Tracker(db_url, config) as opened:
        yield opened


def item(item_id: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"id": item_id, "input_payload": {"messages": [{"role": "user", "content": content}]},
            **extra}


def statuses(tracker: Tracker, job: str | None = None) -> dict[str, str]:
    return {result.id: result.status for result in tracker.results(job)}


def run_until_idle(tracker: Tracker) -> None:
    assert tracker.run(until_idle=True, poll_interval=0.05, lease_ttl=5.0) == 0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE:.0f} s: {what}")
        time.sleep(0.02)


def test_example__runs_against_the_fake_server_with_no_key(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in OWN_ENVIRONMENT}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py")],
                          cwd=tmp_path, env=environment, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for row, country in enumerate(["France", "Japan", "Kenya", "Peru"], start=1):
        assert (f"capital-{row}  succeeded  'echo: What is the capital of {country}?'  "
                f"{{'row': {row}, 'country': '{country}'}}") in lines
    assert "items: {'queued': 0, 'in_batch': 0, 'succeeded': 4, 'failed': 0, 'cancelled': 0}" \
        in lines
    assert list(tmp_path.iterdir()) == []  # the database was a temporary file


def test_readme__shows_the_core_of_the_example() -> None:
    section = (ROOT / "README.md").read_text().split("## Python API\n", 1)[1].split("\n## ")[0]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    example = {line.strip() for line in (ROOT / "examples" / "python_api.py").read_text()
               .splitlines()}
    body = [line.strip() for line in block.splitlines() if line.startswith("    ")]
    assert len(body) == 5 and [line for line in body if line not in example] == []


def test_round_trip__enqueue_run_results_status_retry(tracker: Tracker) -> None:
    items = [item("a", "one", metadata={"row": 1, "tags": ["x", "ü"]}),
             item("b", "two [fail-once:400]", metadata={"row": 2}),
             item("c", "three", model=MODEL)]
    assert tracker.enqueue(items, job="evals", model=MODEL) == EnqueueResult(3, 0)
    assert tracker.enqueue(items, job="evals", model=MODEL) == EnqueueResult(0, 3)
    assert tracker.status()["items"]["queued"] == 3
    run_until_idle(tracker)

    results = {result.id: result for result in tracker.results(job="evals")}
    assert list(results) == ["a", "b", "c"]  # enqueue order
    a = results["a"]
    assert a.status is ItemStatus.SUCCEEDED and a.output_text == "echo: one"
    assert (a.job, a.model, a.provider, a.attempts) == ("evals", MODEL, "openai", 1)
    assert a.metadata == {"row": 1, "tags": ["x", "ü"]} and a.provider_batch_id
    assert results["b"].status == "failed" and results["b"].error_message
    assert results["c"].metadata is None
    assert [r.id for r in tracker.results(status="failed")] == ["b"]
    assert list(tracker.results(job="other")) == []
    report = tracker.status("evals")
    assert report["items"] == {"queued": 0, "in_batch": 0, "succeeded": 2, "failed": 1,
                               "cancelled": 0}
    assert report["jobs"]["evals"]["items"]["failed"] == 1

    assert tracker.retry() == 1
    assert tracker.retry() == 0  # nothing failed is left to re-queue
    run_until_idle(tracker)
    assert statuses(tracker) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
    spend = tracker.cost(job="evals", by="job")
    costs = [result.cost_usd for result in tracker.results(job="evals")]
    assert "unknown" not in costs and None not in costs
    assert Decimal(spend["total_usd"]) == sum(Decimal(c) for c in costs if c) > 0


def test_budget__set_at_enqueue_and_changed(tracker: Tracker) -> None:
    tracker.enqueue([item("a", "one")], job="capped", model=MODEL, budget_usd="2.5")
    assert tracker.status()["budget"]["jobs"] == {"capped": "2.50"}
    assert tracker.set_budget("capped", Decimal("7")) == Decimal("7")
    assert tracker.status()["jobs"]["capped"]["budget_usd"] == "7.00"
    assert tracker.set_budget("capped", None) is None
    assert tracker.status()["budget"]["jobs"] == {}


def test_cancel_job__queued_items_end_at_once_and_retry_sends_them(tracker: Tracker) -> None:
    tracker.enqueue([item("l1", "one"), item("l2", "two")], job="later", model=MODEL)
    tracker.enqueue([item("n1", "one")], job="now", model=MODEL)
    assert tracker.cancel(job="later") == CancelResult(batch_ids=[], queued_cancelled=2)
    assert statuses(tracker) == {"l1": "cancelled", "l2": "cancelled", "n1": "queued"}
    assert tracker.retry(failed=False, cancelled=True, job="now") == 0
    assert tracker.retry(failed=False, cancelled=True, job="later") == 2
    run_until_idle(tracker)
    assert set(statuses(tracker).values()) == {"succeeded"}


def test_cancel__a_running_batch_while_the_worker_runs(tracker: Tracker, fake: FakeOpenAI,
                                                       db_url: str) -> None:
    fake.state.in_progress_seconds = 600.0  # the batch runs until it is cancelled
    tracker.enqueue([item(f"s{n}", f"slow {n}") for n in range(3)], job="slow", model=MODEL)
    cancelled: list[CancelResult] = []
    errors: list[BaseException] = []

    def cancel_once_running() -> None:
        try:
            with Tracker(db_url, tracker.config_path) as other:
                wait_for(lambda: other.status("slow")["batches"]["in_progress"] == 1,
                         "the batch is in progress")
                cancelled.append(other.cancel(job="slow"))
        except BaseException as exc:
            errors.append(exc)
            fake.state.in_progress_seconds = 0.0  # let the worker finish all the same

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    try:
        run_until_idle(tracker)  # ends once the cancelled batch is stored
    finally:
        canceller.join(timeout=DEADLINE)
    assert errors == []
    batch = next(tracker.results()).provider_batch_id
    assert batch is not None
    assert len(cancelled[0].batch_ids) == 1 and cancelled[0].queued_cancelled == 0
    assert statuses(tracker) == {"s0": "cancelled", "s1": "cancelled", "s2": "cancelled"}
    with pytest.raises(InputError, match="has already ended"):
        tracker.cancel(batch)
    assert tracker.cancel(all=True) == CancelResult(batch_ids=[], queued_cancelled=0)

    fake.state.in_progress_seconds = 0.3
    assert tracker.retry(cancelled=True) == 3
    run_until_idle(tracker)
    assert set(statuses(tracker).values()) == {"succeeded"}


@pytest.mark.parametrize(("bad", "message"), [
    pytest.param({"id": "c"}, "<items>:3: field 'input_payload' must be an object",
                 id="no-payload"),
    pytest.param(item("c", "x", metadata={"when": object()}),
                 "<items>:3: cannot be written as JSON (Object of type object",
                 id="not-json"),
    pytest.param({**item("c", "x"), "input_payload": {
        "messages": [{"role": "user", "content": "x"}], "temperature": math.nan}},
        "<items>:3: field 'input_payload.temperature': NaN is not a finite number",
        id="nan"),
    pytest.param(item("c", "x\ud800"), "<items>:3: field 'input_payload.messages[0].content': "
                 "holds a lone UTF-16 surrogate", id="lone-surrogate"),
    pytest.param(item("a", "again"), "<items>:3: id 'a' appears more than once",
                 id="repeated-id"),
])
def test_enqueue__a_bad_item_is_named_and_nothing_is_written(
        tracker: Tracker, bad: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as raised:
        tracker.enqueue([item("a", "one"), item("b", "two"), bad], model=MODEL)
    assert str(raised.value).startswith(message), str(raised.value)
    assert sum(tracker.status()["items"].values()) == 0
    assert list(tracker.results()) == []


def test_enqueue__no_items_budget_and_arguments(tracker: Tracker) -> None:
    with pytest.raises(InputError, match="^<items>: the file has no items$"):
        tracker.enqueue([], model=MODEL)
    with pytest.raises(InputError, match="--budget-usd 'lots'"):
        tracker.enqueue([item("a", "one")], model=MODEL, budget_usd="lots")
    with pytest.raises(InputError, match="give one of"):
        tracker.cancel()
    with pytest.raises(InputError, match="give one of"):
        tracker.cancel("batch_x", all=True)
    tracker.enqueue([item("a", "one")], model=MODEL)
    assert next(tracker.results()).job == DEFAULT_JOB


def test_result__one_typed_field_per_result_field() -> None:
    assert tuple(field.name for field in dataclasses.fields(Result)) == RESULT_FIELDS


def test_defaults__are_the_modules_they_repeat() -> None:
    from tracker import api

    assert api.DEFAULT_JOB == DEFAULT_JOB
    assert api.DEFAULT_DB_URL == engine.DEFAULT_DB_URL


def test_import_tracker__loads_the_api_only_when_asked() -> None:
    done = subprocess.run([sys.executable, "-c", (
        "import sys, tracker\n"
        "assert 'tracker.api' not in sys.modules\n"
        "from tracker import Tracker\n"
        "assert 'sqlalchemy' not in sys.modules and 'openai' not in sys.modules\n"
        "assert Tracker.__module__ == 'tracker.api'\n")],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
