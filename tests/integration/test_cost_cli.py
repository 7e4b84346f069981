"""`tracker cost`, `tracker budget` and `enqueue --budget-usd` as a user runs them: real
processes on a real database of either engine."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_cli_input import _line, assert_one_line_error, count_items, query, run


def _file(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "evals.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_enqueue_budget__set_with_the_items_and_changed_by_tracker_budget(
        tmp_path: Path, db_url: str) -> None:
    data = _file(tmp_path, _line("a"), _line("b"))
    done = run(tmp_path, "enqueue", data, "--model", "gpt-5-mini", "--budget-usd", "12.50",
               db=db_url)
    assert done.returncode == 0, done.stderr
    status = json.loads(run(tmp_path, "status", "--json", db=db_url).stdout)
    assert status["budget"]["jobs"] == {"evals": "12.50"}
    assert status["jobs"]["evals"]["budget_usd"] == "12.50"
    raised = run(tmp_path, "budget", "evals", "40", db=db_url)
    assert raised.stdout.strip() == "job evals: budget 40 USD"
    assert query(db_url, "SELECT budget_usd FROM jobs") == [("40",)]
    assert run(tmp_path, "budget", "evals", "none", db=db_url).returncode == 0
    assert query(db_url, "SELECT budget_usd FROM jobs") == [(None,)]


def test_enqueue_budget__bad_amounts_are_one_line_errors_and_write_nothing(
        tmp_path: Path, db_url: str) -> None:
    data = _file(tmp_path, _line("a"))
    for amount in ("abc", "-1", "NaN", "inf"):
        done = run(tmp_path, "enqueue", data, "--model", "gpt-5-mini", "--budget-usd", amount,
                   db=db_url)
        assert_one_line_error(done, f"--budget-usd {amount!r}", "non-negative")
    assert count_items(db_url) == 0
    assert_one_line_error(run(tmp_path, "budget", "evals", "--", "-3", db=db_url), "USD '-3'")


def test_enqueue_budget__not_set_when_a_line_is_bad(tmp_path: Path, db_url: str) -> None:
    data = _file(tmp_path, _line("a"), "{not json")
    done = run(tmp_path, "enqueue", data, "--model", "gpt-5-mini", "--budget-usd", "5",
               db=db_url)
    assert_one_line_error(done, "evals.jsonl:2")
    assert query(db_url, "SELECT count(*) FROM jobs") == [(0,)]


def test_cost__an_empty_ledger_costs_zero_and_every_grouping_works(
        tmp_path: Path, db_url: str) -> None:
    for by in ("job", "model", "day", "batch"):
        document = json.loads(run(tmp_path, "cost", "--json", "--by", by, db=db_url).stdout)
        assert (document["total_usd"], document["rows"], document["by"]) == ("0.00", [], by)
    shown = run(tmp_path, "cost", "--job", "evals", db=db_url)
    assert shown.returncode == 0 and "nothing billed yet" in shown.stdout
    assert "total $0.00" in shown.stdout
