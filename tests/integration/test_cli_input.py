"""The CLI contract and bad input: one clear line, exit 2, nothing half-written."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tracker import cli
from tracker.store.engine import make_engine, read

ROOT = Path(__file__).resolve().parents[2]


def _line(item_id: str = "a", content: str = "hi", **extra: object) -> str:
    return json.dumps({"id": item_id, "input_payload": {
        "messages": [{"role": "user", "content": content}]}, **extra})


def run(tmp_path: Path, *args: str, stdin: bytes | None = None,
        env: dict[str, str] | None = None,
        db: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OPENAI_API_KEY", "TRACKER_CONFIG", "TRACKER_DB",
                                "OPENAI_BASE_URL")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tracker", "--db", db or f"sqlite:///{tmp_path / 't.db'}", *args],
        input=stdin.decode("utf-8", "surrogateescape") if stdin is not None else None,
        capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=120)


def query(db: str, sql: str) -> list[tuple[Any, ...]]:
    engine = make_engine(db)
    try:
        with read(engine) as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def count_items(db: str) -> int:
    return int(query(db, "SELECT count(*) FROM items")[0][0])


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_enqueue__idempotent(tmp_path: Path, db_url: str) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text(_line("a") + "\n" + _line("b", model="gpt-4o-mini") + "\n")
    first = run(tmp_path, "enqueue", str(data), "--model", "gpt-5-mini", db=db_url)
    assert first.stdout.strip() == "enqueued 2 items, skipped 0 already present"
    again = run(tmp_path, "enqueue", str(data), "--model", "gpt-5-mini", db=db_url)
    assert again.stdout.strip() == "enqueued 0 items, skipped 2 already present"
    assert dict(query(db_url, "SELECT id, model FROM items")) == {
        "a": "gpt-5-mini", "b": "gpt-4o-mini"}  # a line's own model wins
    assert query(db_url, "SELECT entity_id, from_status, to_status FROM transitions "
                         "ORDER BY id") == [("a", None, "queued"), ("b", None, "queued")]


def test_enqueue__same_id_other_payload_inserts_nothing(tmp_path: Path, db_url: str) -> None:
    run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", stdin=(_line("a") + "\n").encode(),
        db=db_url)
    done = run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini",
               stdin=(_line("new") + "\n" + _line("a", "changed") + "\n").encode(), db=db_url)
    assert_one_line_error(done, "<stdin>:2", "'a'", "different")
    assert count_items(db_url) == 1


BAD_LINES = [
    (b"not json\n", ":1:", "not valid JSON"),
    (b"[1, 2]\n", ":1:", "expected a JSON object"),
    (b'{"input_payload": {"messages": [{"role": "user", "content": "x"}]}}\n', ":1:", "'id'"),
    ((_line("") + "\n").encode(), ":1:", "'id'"),
    ((_line("a") + "\n" + _line("a") + "\n").encode(), ":2:", "more than once"),
    (b'{"id": "a"}\n', ":1:", "input_payload"),
    (b'{"id": "a", "input_payload": {}}\n', ":1:", "messages"),
    (b'{"id": "a", "input_payload": {"messages": "hi"}}\n', ":1:", "messages"),
    (json.dumps({"id": "a", "input_payload": {"messages": [{"role": "user", "content": "x"}],
                                              "stream": True}}).encode() + b"\n", ":1:",
     "stream"),
    ((_line("a", model="gpt-nope") + "\n").encode(), ":1:", "'gpt-nope' is not configured"),
    (b'{"id": "a", "input_payload": {"messages": ["\xff\xfe"]}}\n', ":1:", "UTF-8"),
    ((_line("a", "x" * (1024 * 1024 + 10)) + "\n").encode(), ":1:", "longer than 1 MB"),
    (b'{"id": "a", "input_payload": {"messages": [{"role": "user", "content": "x"}], '
     b'"temperature": NaN}}\n', ":1:", "field 'input_payload.temperature': NaN is not a finite"),
    (b'{"id": "a", "input_payload": {"messages": [{"role": "user", "content": "x"}], '
     b'"logit_bias": {"50256": -Infinity}}}\n', ":1:",
     "field 'input_payload.logit_bias.50256': -Infinity"),
    (b'{"id": "a", "input_payload": {"messages": [{"role": "user", "content": "x"}], '
     b'"temperature": 1e999}}\n', ":1:", "field 'input_payload.temperature': 1e999 is not a"),
    (b'{"id": "a", "input_payload": {"messages": [{"role": "user", "content": "x\\ud800"}]}}\n',
     ":1:", "field 'input_payload.messages[0].content': holds a lone UTF-16 surrogate"),
    (b"", "", "no items"),
    (b"\n\n  \n", "", "no items"),
]


@pytest.mark.parametrize("content,where,reason", BAD_LINES)
def test_enqueue__bad_line_exits_2_and_inserts_nothing(tmp_path: Path, content: bytes,
                                                       where: str, reason: str,
                                                       db_url: str) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes((_line("good") + "\n").encode() + content if where else content)
    fix = ":2:" if where == ":1:" else where.replace(":2:", ":3:")
    done = run(tmp_path, "enqueue", str(data), "--model", "gpt-5-mini", db=db_url)
    assert_one_line_error(done, f"{data}{fix}" if where else str(data), reason)
    assert count_items(db_url) == 0


def test_enqueue__disabled_provider(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("batch:\n  providers:\n    openai:\n      enabled: false\n      models:\n"
                      "        - name: gpt-5-mini\n")
    done = run(tmp_path, "--config", str(config), "enqueue", "-", "--model", "gpt-5-mini",
               stdin=(_line() + "\n").encode())
    assert_one_line_error(done, "not enabled")


def test_enqueue__no_model(tmp_path: Path) -> None:
    done = run(tmp_path, "enqueue", "-", stdin=(_line() + "\n").encode())
    assert_one_line_error(done, "<stdin>:1", "--model")


@pytest.mark.parametrize("target,reason", [("missing.jsonl", "no such file"),
                                           (".", "is a directory")])
def test_enqueue__unreadable_file(tmp_path: Path, target: str, reason: str) -> None:
    assert_one_line_error(run(tmp_path, "enqueue", target), reason)


def test_enqueue__a_repeated_id_is_named_before_a_bad_line_after_it(
        tmp_path: Path, db_url: str) -> None:
    """The repeat is found while its chunk is written (on PostgreSQL in a thread of its own,
    while the next lines are parsed); the bad line after it is not what the user is told."""
    from tracker.enqueue import CHUNK

    lines = [_line(f"i{k}") for k in range(CHUNK + 50)]
    lines[3] = _line("i2")
    lines[CHUNK + 10] = "{oops"
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(lines) + "\n")
    done = run(tmp_path, "enqueue", str(data), "--model", "gpt-5-mini", db=db_url)
    assert_one_line_error(done, f"{data}:4:", "'i2' appears more than once")
    assert count_items(db_url) == 0


def test_enqueue__million_lines_one_bad_near_the_end(tmp_path: Path, db_url: str) -> None:
    n, bad = 1_000_000, 999_990
    data = tmp_path / "big.jsonl"
    template = '{"id": "i%d", "input_payload": {"messages": [{"role": "user", "content": "q"}]}}\n'
    with data.open("w") as out:
        out.writelines(template % i if i != bad else "{oops\n" for i in range(1, n + 1))
    done = run(tmp_path, "enqueue", str(data), "--model", "gpt-5-mini", db=db_url)
    assert_one_line_error(done, f"{data}:{bad}:", "not valid JSON")
    assert count_items(db_url) == 0


@pytest.mark.parametrize(
    "config_text,fragment",
    [
        ("batch: {providers: {openai: {models: [}}\n", "YAML syntax error"),
        ("batch:\n  providers:\n    acme: {kind: acme}\n",
         "c.yaml:3: batch.providers.acme.kind: unknown kind 'acme'"),
        ("batch:\n  providers:\n    openai:\n      colour: blue\n", "c.yaml:4: "
                                                                     "batch.providers.openai.colour"),
        ("batch:\n  providers:\n    openai:\n      models:\n        - name: m\n"
         "          max_prompts_per_batch: 0\n", "c.yaml:6: "),
    ],
)
def test_config__errors_via_cli(tmp_path: Path, config_text: str, fragment: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(config_text)
    done = run(tmp_path, "--config", str(config), "enqueue", "-", stdin=b"")
    assert_one_line_error(done, fragment)


def test_database__errors_via_cli(tmp_path: Path) -> None:
    (tmp_path / "text.db").write_text("not a database " * 200)
    assert_one_line_error(subprocess.run(
        [sys.executable, "-m", "tracker", "--db", f"sqlite:///{tmp_path}/text.db", "status"],
        capture_output=True, text=True), "not a tracker database")
    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    assert_one_line_error(subprocess.run(
        [sys.executable, "-m", "tracker", "--db", f"sqlite:///{tmp_path}/other.db", "status"],
        capture_output=True, text=True), "not a tracker database")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(subprocess.run(
        [sys.executable, "-m", "tracker", "--db", f"sqlite:///{tmp_path}/file/t.db", "status"],
        capture_output=True, text=True), "cannot create database")
    run(tmp_path, "init")
    with sqlite3.connect(tmp_path / "t.db") as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, '999_future', 0)")
    assert_one_line_error(run(tmp_path, "status"), "newer")
    assert_one_line_error(subprocess.run(
        [sys.executable, "-m", "tracker", "--db", "postgresql+psycopg://u@127.0.0.1:1/x",
         "status"], capture_output=True, text=True), "127.0.0.1:1/x", "connection")
    assert_one_line_error(subprocess.run(
        [sys.executable, "-m", "tracker", "--db", "mysql://u@127.0.0.1/x", "status"],
        capture_output=True, text=True), "mysql databases are not supported")


def test_status__json_and_results_formats(tmp_path: Path, db_url: str) -> None:
    run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini",
        stdin=(_line("a") + "\n" + _line("b") + "\n").encode(), db=db_url)
    report = json.loads(run(tmp_path, "status", "--json", db=db_url).stdout)
    assert report["items"] == {"queued": 2, "in_batch": 0, "succeeded": 0, "failed": 0,
                               "cancelled": 0}
    assert set(report["batches"]) == {"pending", "submitted", "in_progress", "completed",
                                      "failed", "cancelled", "ingested"}
    assert report["workers"] == [] and report["daemon"] is None
    rows = list(csv.DictReader(io.StringIO(
        run(tmp_path, "results", "--format", "csv", db=db_url).stdout)))
    assert [r["id"] for r in rows] == ["a", "b"]
    assert {"id", "status", "output_text", "error_message", "attempts", "provider_batch_id",
            "model"} <= set(rows[0])
    assert run(tmp_path, "results", "--status", "succeeded", db=db_url).stdout == ""
    run(tmp_path, "results", "-o", "out.jsonl", db=db_url)
    assert [json.loads(x)["id"] for x in (tmp_path / "out.jsonl").read_text().splitlines()] == [
        "a", "b"]


def _imported(done: subprocess.CompletedProcess[str]) -> set[str]:
    """The modules a run imported, from its `-X importtime` lines."""
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:")}


def test_cli__a_current_sqlite_file_is_used_without_sqlalchemy(tmp_path: Path) -> None:
    """`status`, `results`, `init` and `enqueue` on an SQLite file with the newest schema go
    through `sqlite3` alone: importing SQLAlchemy would take their whole start-up budget."""
    run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", stdin=(_line("a") + "\n").encode())
    timing = {"PYTHONPROFILEIMPORTTIME": "1"}
    enqueue = run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", env=timing,
                  stdin=(_line("a") + "\n" + _line("b") + "\n").encode())
    status = run(tmp_path, "status", "--json", env=timing)
    drawn = run(tmp_path, "status", env=timing)
    results = run(tmp_path, "results", env=timing)
    init = run(tmp_path, "init", env=timing)
    for done in (enqueue, status, drawn, results, init):
        assert done.returncode == 0, done.stderr
        assert "sqlite3" in _imported(done) and "sqlalchemy" not in _imported(done)
    assert enqueue.stdout.strip() == "enqueued 1 items, skipped 1 already present"
    assert json.loads(status.stdout)["items"]["queued"] == 2
    assert ["stdin", "gpt-5-mini", "░░░░░░░░", "0%", "2", "0", "0"] in [
        line.split()[:7] for line in drawn.stdout.splitlines()]
    assert [json.loads(line)["id"] for line in results.stdout.splitlines()] == ["a", "b"]
    assert f"database ready: {tmp_path / 't.db'}" in init.stderr
    assert query(f"sqlite:///{tmp_path / 't.db'}",
                 "SELECT entity_id, to_status FROM transitions WHERE entity = 'item' "
                 "ORDER BY entity_id") == [("a", "queued"), ("b", "queued")]


def test_read_commands__an_older_sqlite_file_is_migrated_first(tmp_path: Path) -> None:
    from tracker.store.migrations import latest_version, migrations

    with sqlite3.connect(tmp_path / "t.db") as conn:
        for version, name, sql in migrations("sqlite")[:-1]:
            conn.executescript(sql)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (version, name))
    done = run(tmp_path, "status", "--json", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done.stderr
    assert "sqlalchemy" in _imported(done)
    assert json.loads(done.stdout)["items"]["queued"] == 0
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == (
            latest_version("sqlite"))


def test_jobs__job_and_metadata_are_kept_and_returned(tmp_path: Path, db_url: str) -> None:
    evals = tmp_path / "evals-2026.jsonl"
    evals.write_text(_line("e1", metadata={"row": 7, "split": "test", "tags": ["a", "ü"]})
                     + "\n" + _line("e2") + "\n")
    run(tmp_path, "enqueue", str(evals), "--model", "gpt-5-mini", db=db_url)
    run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", db=db_url,
        stdin=(_line("s1", metadata={"z": 1, "a": 2}) + "\n").encode())
    run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", "--job", "labels", db=db_url,
        stdin=(_line("l1") + "\n").encode())
    records = {r["id"]: r for r in map(json.loads, run(tmp_path, "results", db=db_url)
                                       .stdout.splitlines())}
    assert {k: r["job"] for k, r in records.items()} == {
        "e1": "evals-2026", "e2": "evals-2026", "s1": "stdin", "l1": "labels"}
    assert records["e1"]["metadata"] == {"row": 7, "split": "test", "tags": ["a", "ü"]}
    assert list(records["s1"]["metadata"]) == ["z", "a"]  # the caller's order
    assert records["e2"]["metadata"] is None
    only = run(tmp_path, "results", "--job", "evals-2026", "--format", "csv", db=db_url).stdout
    rows = list(csv.DictReader(io.StringIO(only)))
    assert [r["id"] for r in rows] == ["e1", "e2"]
    assert json.loads(rows[0]["metadata"]) == records["e1"]["metadata"]
    report = json.loads(run(tmp_path, "status", "--json", db=db_url).stdout)
    assert {name: job["items"]["queued"] for name, job in report["jobs"].items()} == {
        "evals-2026": 2, "labels": 1, "stdin": 1}
    assert report["items"]["queued"] == 4
    one = json.loads(run(tmp_path, "status", "--json", "--job", "labels", db=db_url).stdout)
    assert one["items"]["queued"] == 1 and list(one["jobs"]) == ["labels"]
    shown = run(tmp_path, "status", "--job", "labels", db=db_url).stdout
    assert [line.split()[:7] for line in shown.splitlines() if line.startswith("labels")] == [
        ["labels", "gpt-5-mini", "░░░░░░░░", "0%", "1", "0", "0"]]  # queued, in batch, done


def test_jobs__bad_metadata_a_bad_job_or_an_id_of_another_job(tmp_path: Path,
                                                              db_url: str) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text(_line("a") + "\n" + _line("b", metadata=["not", "an", "object"]) + "\n")
    assert_one_line_error(run(tmp_path, "enqueue", str(data), "--model", "gpt-5-mini",
                              db=db_url), f"{data}:2:", "field 'metadata' must be an object")
    assert_one_line_error(run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", "--job", " ",
                              stdin=(_line("a") + "\n").encode(), db=db_url), "job name")
    run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", "--job", "one",
        stdin=(_line("a") + "\n").encode(), db=db_url)
    assert_one_line_error(run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", "--job", "two",
                              stdin=(_line("a") + "\n").encode(), db=db_url),
                          "<stdin>:1:", "different model, payload, job or metadata")
    assert count_items(db_url) == 1


def test_init__creates_the_schema_in_an_empty_database(tmp_path: Path, db_url: str) -> None:
    done = run(tmp_path, "init", db=db_url)
    assert done.returncode == 0, done.stderr
    assert query(db_url, "SELECT count(*) FROM workers") == [(0,)]
    assert run(tmp_path, "init", db=db_url).returncode == 0  # idempotent
    if db_url.startswith("postgresql"):  # the server trusts loopback: the password is unused
        with_password = make_url(db_url).set(password="s3cr3t-pw")
        again = run(tmp_path, "init", db=with_password.render_as_string(hide_password=False))
        assert again.returncode == 0, again.stderr
        assert "database ready" in again.stderr and "s3cr3t-pw" not in again.stderr


def test_run__missing_key_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run(tmp_path, "run", "--until-idle"), "OPENAI_API_KEY")


def test_cancel_and_retry__bad_arguments(tmp_path: Path, db_url: str) -> None:
    env = {"OPENAI_API_KEY": "sk-test-123456789"}
    assert_one_line_error(run(tmp_path, "cancel", env=env, db=db_url), "--all")
    assert_one_line_error(run(tmp_path, "cancel", "batch_nope", env=env, db=db_url), "no batch")
    assert_one_line_error(run(tmp_path, "cancel", "--all", "--job", "x", env=env, db=db_url),
                          "one of PROVIDER_BATCH_ID, --all or --job")
    assert run(tmp_path, "retry", db=db_url).stdout.strip() == "re-queued 0 items"
    run(tmp_path, "enqueue", "-", "--model", "gpt-5-mini", "--job", "x", db=db_url,
        stdin=(_line("a") + "\n" + _line("b") + "\n").encode())
    assert run(tmp_path, "cancel", "--job", "x", env=env, db=db_url).stdout.strip() == (
        "cancel requested for 0 batch(es) of job x; 2 queued item(s) cancelled")
    assert run(tmp_path, "retry", "--cancelled", "--job", "y", db=db_url).stdout.strip() == (
        "re-queued 0 items")
    assert run(tmp_path, "retry", "--cancelled", "--job", "x", db=db_url).stdout.strip() == (
        "re-queued 2 items")


def test_commands__documented_with_examples() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, command in cli.cli.commands.items():
        assert command.help and "Example:" in command.help, name
        assert f"tracker {name}" in readme, name
