"""The `tracker status` view drawn from hand-built reports, as plain text 100 columns wide."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rich.console import Console

from tracker.status_view import duration, render, usd

NOW = 10_000.0


def _items(queued: int = 0, in_batch: int = 0, succeeded: int = 0, failed: int = 0,
           cancelled: int = 0) -> dict[str, int]:
    return {"queued": queued, "in_batch": in_batch, "succeeded": succeeded, "failed": failed,
            "cancelled": cancelled}


#: A report as `status_of` writes it before spend, open batches and budget were added.
BASE: dict[str, Any] = {
    "items": _items(queued=5, succeeded=5),
    "jobs": {"alpha": {"items": _items(queued=1, succeeded=3)},
             "beta": {"items": _items(queued=4, succeeded=2)}},
    "batches": {"pending": 0, "submitted": 0, "in_progress": 1, "completed": 0, "failed": 0,
                "cancelled": 0, "ingested": 2},
    "oldest_open_batch_age_seconds": 200.0,
    "paused_providers": [],
    "batch_errors": [],
    "daemon": None,
    "provider_files_to_delete": {"pending": 0, "failing": 0, "last_error": None},
    "workers": [],
}


def _pace(spent: str | None, projected: str | None, eta: float | None,
          per_hour: float | None) -> dict[str, Any]:
    return {"spent_usd": spent, "projected_usd": projected, "eta_seconds": eta,
            "items_per_hour": per_hour}


def full_report() -> dict[str, Any]:
    """BASE with every key the developer is adding: two models in one job, an unpriced job."""
    report = copy.deepcopy(BASE)
    report["jobs"] = {
        "evals": {"items": _items(queued=10, in_batch=5, succeeded=20, failed=1),
                  **_pace("1.234567", "2.5", 200.0, 1500.0), "budget_usd": "5",
                  "models": {
                      "gpt-5-mini": {"items": _items(queued=10, in_batch=5, succeeded=15),
                                     **_pace("1.2", "2.4", 200.0, 1200.0)},
                      "gpt-4o-mini": {"items": _items(succeeded=5, failed=1),
                                      **_pace("0.034567", "0.1", None, 300.0)}}},
        "labels": {"items": _items(queued=3, succeeded=7), **_pace("unknown", None, None, None),
                   "budget_usd": None,
                   "models": {"gpt-5-mini": {"items": _items(queued=3, succeeded=7),
                                             **_pace("unknown", None, None, None)}}},
    }
    report["open_batches"] = [
        {"id": "tb_0123456789abcdef0123", "provider_batch_id": "batch_abc", "job": "evals",
         "model": "gpt-5-mini", "provider": "openai", "status": "in_progress",
         "provider_status": "finalizing", "items": 5, "age_seconds": 200.0,
         "request_completed": 3, "request_failed": 1, "request_total": 5}]
    report["budget"] = {"limit_usd": "10", "spent_usd": "1.234567", "in_flight_usd": "0.75",
                        "waiting_batches": 1,
                        "waiting": [{"batch_id": "tb_waiting", "job": "evals",
                                     "model": "gpt-5-mini",
                                     "reason": "would pass the job's budget of $5.00"}]}
    return report


def text_of(report: dict[str, Any]) -> str:
    console = Console(record=True, width=100, color_system=None)
    console.print(render(report, now=NOW))
    return console.export_text()


def _line(text: str, *starts: str) -> str:
    """The one line that holds each of `starts`, in order."""
    found = [line for line in text.splitlines()
             if all(part in line for part in starts)
             and line.index(starts[0]) < line.index(starts[-1])]
    assert len(found) == 1, (starts, text)
    return found[0]


def test_render__a_report_without_the_new_keys() -> None:
    text = text_of(BASE)
    assert _line(text, "alpha", "75%", "1", "3").split() == [
        "alpha", "██████░░", "75%", "1", "0", "3"]
    assert _line(text, "beta", "33%").split() == ["beta", "██░░░░░░", "33%", "4", "0",
                                                         "2"]
    assert _line(text, "total", "50%").split() == ["total", "████░░░░", "50%", "5", "0",
                                                           "5"]
    header = _line(text, "job", "queued").split()
    assert header == ["job", "done", "queued", "in", "batch", "succeeded"]  # no empty columns
    assert "batches: in_progress 1, ingested 2\noldest open batch: 3m 20s old\n" in text
    assert "workers: none running" in text
    for absent in ("model", "ETA", "spent", "open batches", "budget", "$"):
        assert absent not in text


def test_render__rows_per_job_and_model_with_pace_and_spend() -> None:
    text = text_of(full_report())
    assert _line(text, "evals", "gpt-5-mini", "%").split() == [
        "evals", "gpt-5-mini", "████░░░░", "50%", "10", "5", "15", "0", "1,200", "3m", "20s",
        "$1.20", "$2.40"]
    assert _line(text, "evals", "gpt-4o-mini").split() == [
        "evals", "gpt-4o-mini", "████████", "100%", "0", "0", "5", "1", "300", "-", "$0.0346",
        "$0.1000"]
    # a spend the tracker cannot price is unknown, never $0; no projection is "-"
    assert _line(text, "labels", "gpt-5-mini").split()[-4:] == ["-", "-", "unknown", "-"]
    # the total of a job with unknown spend is unknown too; the slowest known ETA is not
    # claimed when a row with work left has none
    assert _line(text, "total", "%").split() == [
        "total", "████░░░░", "60%", "13", "5", "27", "1", "1,500", "-", "unknown", "-"]
    assert "failed" in _line(text, "job", "queued")


def test_render__open_batches_and_budget_with_a_waiting_reason() -> None:
    text = text_of(full_report())
    assert "open batches, oldest first" in text
    assert _line(text, "tb_0123456789abcdef0123", "batch_abc").split() == [
        "tb_0123456789abcdef0123", "batch_abc", "evals", "gpt-5-mini",
        "in_progress/finalizing", "5", "4/5", "3m", "20s"]
    assert "budget: limit $10.00, spent $1.23, in flight $0.7500, 1 batch(es) waiting" in text
    assert "job evals: budget $5.00, spent $1.23" in text
    assert ("waiting: batch tb_waiting (evals, gpt-5-mini): would pass the job's budget of "
            "$5.00") in text


def test_render__no_budget_section_without_a_limit_or_waiting_batches() -> None:
    report = full_report()
    report["budget"] = {"limit_usd": None, "spent_usd": "1", "in_flight_usd": "0",
                        "waiting_batches": 0, "waiting": []}
    report["jobs"]["evals"]["budget_usd"] = None
    assert "budget" not in text_of(report)


def test_render__problems_workers_and_files_stay_visible() -> None:
    report = copy.deepcopy(BASE)
    report["paused_providers"] = [{"provider": "openai", "reason": "insufficient_quota: pay up",
                                   "paused_at": NOW - 90, "next_probe_at": NOW + 30}]
    report["batch_errors"] = [{"id": "tb_x", "provider_batch_id": None, "status": "pending",
                               "last_error": "HTTP 500", "next_try_in_seconds": 12.0}]
    report["workers"] = [{"host": "box", "pid": 42, "heartbeat_age_seconds": 2.0,
                          "claimed_batches": 3}]
    report["provider_files_to_delete"] = {"pending": 4, "failing": 1, "last_error": "HTTP 503"}
    text = text_of(report)
    assert ("PAUSED openai: insufficient_quota: pay up (since 1m 30s ago, next probe in 30s)"
            in text)
    assert "batch tb_x (pending): HTTP 500 (next try in 12s)" in text
    assert "workers: 1\n  pid 42 on box: heartbeat 2s ago, 3 open batch(es) claimed\n" in text
    assert "provider files to delete: 4 (1 failing: HTTP 503)" in text


def test_render__no_items_and_one_job() -> None:
    empty = {**copy.deepcopy(BASE), "jobs": {}, "items": _items()}
    assert text_of(empty).splitlines()[0] == "no items"
    one = {**copy.deepcopy(BASE), "jobs": {"alpha": BASE["jobs"]["alpha"]}}
    assert "total" not in text_of(one)


def test_render__fits_100_columns() -> None:
    assert max(len(line) for line in text_of(full_report()).splitlines()) <= 100


@pytest.mark.parametrize(("seconds", "shown"), [
    (None, "-"), (0.0, "0s"), (-3.0, "0s"), (59.4, "59s"), (200.0, "3m 20s"),
    (3599.0, "59m 59s"), (3600.0, "1h 00m"), (5430.0, "1h 30m"), (90000.0, "1d 1h")])
def test_duration(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


@pytest.mark.parametrize(("amount", "shown"), [
    (None, "-"), ("unknown", "unknown"), ("0", "$0.00"), ("0.001234", "$0.0012"),
    ("0.99995", "$1.0000"), ("1", "$1.00"), ("1.005", "$1.01"), ("1234.5", "$1,234.50")])
def test_usd(amount: str | None, shown: str) -> None:
    assert usd(amount) == shown
