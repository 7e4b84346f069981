"""`make demo`: the main job end to end against two fake batch APIs, OpenAI's and Anthropic's.

Starts both fakes on loopback (`tracker.testing.fake_openai`, `tracker.testing.fake_anthropic`),
writes a config with two providers (`openai`, kind openai, and `claude`, kind anthropic), then
runs the real commands a user would run: enqueue the sample prompts to each provider (the
Anthropic copy as a job of its own, its ids prefixed `claude-` so every id stays unique),
`tracker run --until-idle`, `tracker status`, `tracker cost`, `tracker show`, `tracker
results`. No API key needed, no network beyond loopback. Everything lands in ./demo-run/.

`--db postgresql+psycopg://USER@HOST:PORT/DBNAME --workers N` (`make demo-workers`) runs the
same job on PostgreSQL with N workers at once. The demo then works in a database of its own,
`tracker_demo`, which it drops and creates again on the server the URL names (the URL's own
database is only used to connect); nothing else on the server is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tracker.store.engine import make_engine, read
from tracker.testing.fake_server import (
    FAKE_API_KEY,
    fake_credentials,
    fake_openai_server,
    fake_server_process,
)

RUN_DIR = Path("demo-run")
SAMPLES = Path(__file__).resolve().parents[1] / "config" / "sample_prompts.jsonl"
DEFAULT_DB = f"sqlite:///{RUN_DIR}/tracker.db"
#: The PostgreSQL database the demo owns: dropped and created again at every run.
PG_DATABASE = "tracker_demo"
#: With several workers, small batches so there are several to share.
WORKERS_BATCH_SIZE = 2
#: The packaged config's batch size, kept for one worker.
BATCH_SIZE = 20
#: The Anthropic-kind provider of the demo config, its model, and the prefix of its items' ids
#: (the same samples go to both providers; an id is unique in the database).
CLAUDE = "claude"
CLAUDE_MODEL = "claude-sonnet-4-5"
CLAUDE_PREFIX = "claude-"
#: A worker that has not finished by then is stopped and the demo fails.
WORKERS_TIMEOUT = 300.0


def _tracker(env: dict[str, str], *args: str, capture: bool = False) -> str:
    print(f"\n$ tracker {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "tracker", *args], env=env, text=True,
        stdout=subprocess.PIPE if capture else None, check=False,
    )
    if done.returncode != 0:
        sys.exit(f"tracker {args[0]} exited with code {done.returncode}")
    return done.stdout or ""


def _show_audit(db_url: str) -> None:
    """What an operator sees with plain SQL (README: "Auditing with SQL")."""
    engine = make_engine(db_url)
    try:
        with read(engine) as conn:
            print("\nSELECT from_status, to_status, reason FROM item_history "
                  "WHERE item_id = 'sample-007'")
            for row in conn.execute(text(
                    "SELECT from_status, to_status, reason FROM item_history "
                    "WHERE item_id = 'sample-007' ORDER BY seq")):
                print(f"  {row[0] or '(new)':<9} -> {row[1]:<10} {row[2]}")
    finally:
        engine.dispose()
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        where = url.database
    else:
        where = (f"{url.database} on {_server(url)} "
                 f"(psql {_libpq(url, hide_password=True)})")
    print(f"\nthe database is {where}; the README's 'Auditing with SQL' has more queries")


def _server(url: URL) -> str:
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def _libpq(url: URL, *, hide_password: bool = False) -> str:
    """The URL as libpq (psycopg, psql) reads it: `postgresql://...`."""
    return url.set(drivername="postgresql").render_as_string(hide_password=hide_password)


def _parse_db(value: str) -> URL:
    try:
        url = make_url(value)
    except ArgumentError:
        raise argparse.ArgumentTypeError(f"not a database URL: {value!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise argparse.ArgumentTypeError(
            f"{url.get_backend_name()} is not supported; use a sqlite:/// or "
            "postgresql+psycopg:// URL")
    return url


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return number


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tracker.testing.demo",
        description="Run the main job end to end against a local fake Batch API.")
    parser.add_argument(
        "--db", type=_parse_db, default=DEFAULT_DB, metavar="URL",
        help=f"database (default {DEFAULT_DB}). With a postgresql+psycopg:// URL the demo drops "
             f"and creates the database {PG_DATABASE} on that server and works there; the "
             "URL's own database is only used to connect.")
    parser.add_argument(
        "--workers", type=_positive, default=1, metavar="N",
        help="start N `tracker run --until-idle` workers at once (needs PostgreSQL; "
             "logs in demo-run/worker-K.log). Default 1.")
    args = parser.parse_args(argv)
    if args.workers > 1 and args.db.get_backend_name() != "postgresql":
        parser.error("--workers above 1 needs a postgresql+psycopg:// --db: SQLite runs one "
                     "worker per database file")
    return args


def _fresh_pg_database(url: URL) -> str:
    """Drop and create the demo's own database on the server `url` names; its URL."""
    admin_db = url.database if url.database and url.database != PG_DATABASE else "postgres"
    try:
        with psycopg.connect(_libpq(url.set(database=admin_db)), autocommit=True,
                             connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.exit(f"cannot create the demo database {PG_DATABASE} on {_server(url)}: {first}")
    demo = url.set(drivername="postgresql+psycopg", database=PG_DATABASE)
    print(f"PostgreSQL: dropped and created the demo's own database {PG_DATABASE} on "
          f"{_server(url)} ({demo.render_as_string()}); nothing else on the server is touched")
    return demo.render_as_string(hide_password=False)


def _new_sqlite(url: URL) -> str:
    """The demo starts from a new file: demo-run/ was just emptied; another file must not
    exist yet (the demo does not delete a file it did not make)."""
    if url.database and url.database != ":memory:" and Path(url.database).exists():
        sys.exit(f"{url.database} exists; give the demo a new file (it deletes only demo-run/)")
    return url.render_as_string(hide_password=False)


_HANDLED = re.compile(r"batch (tb_[0-9a-f]+)\b[^:]*: (submitted as|ingested;)")


def _handled(log: Path) -> tuple[set[str], set[str]]:
    """The batches a worker's log says it submitted, and those it ingested."""
    submitted: set[str] = set()
    ingested: set[str] = set()
    for line in log.read_text(errors="replace").splitlines():
        match = _HANDLED.search(line)
        if match:
            (submitted if match.group(2) == "submitted as" else ingested).add(match.group(1))
    return submitted, ingested


def _run_workers(env: dict[str, str], count: int) -> None:
    args = ["run", "--until-idle", "--poll-interval", "0.2"]
    logs = [RUN_DIR / f"worker-{k}.log" for k in range(1, count + 1)]
    print(f"\n$ tracker {' '.join(args)}    # {count} workers at once, logs in "
          f"{RUN_DIR}/worker-1.log .. worker-{count}.log", flush=True)
    procs = []
    for log in logs:
        with log.open("wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "tracker", *args], env=env,
                                          stdout=out, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + WORKERS_TIMEOUT
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            codes.append(None)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    for k, (proc, log, code) in enumerate(zip(procs, logs, codes, strict=True), start=1):
        submitted, ingested = _handled(log)
        print(f"worker {k} (pid {proc.pid}): exit {code}, submitted {len(submitted)} "
              f"batch(es), ingested {len(ingested)}")
    for k, (log, code) in enumerate(zip(logs, codes, strict=True), start=1):
        if code is None:
            sys.exit(f"worker {k} did not finish within {WORKERS_TIMEOUT:.0f} s; see {log}")
        if code != 0:
            sys.exit(f"worker {k} exited with code {code}; see {log}")


#: The fake servers misbehave the way real providers are reported to; nothing runs twice.
EVENTUALLY_CONSISTENT = ["--batch-not-found-seconds", "0.5", "--late-files-seconds", "1.0"]
ANTHROPIC_EVENTUALLY_CONSISTENT = ["--batch-not-found-seconds", "0.5",
                                   "--results-not-found-seconds", "0.5"]


def _write_config(path: Path, claude_url: str, batch_size: int) -> None:
    """Two providers: OpenAI at OPENAI_BASE_URL (the fake's), and an Anthropic-kind provider
    at the fake Anthropic API. Claude prices are Anthropic's batch prices (half the standard
    rate), as the packaged table holds OpenAI's only."""
    path.write_text(
        "batch:\n"
        "  providers:\n"
        "    openai:                 # kind openai: OPENAI_API_KEY, OPENAI_BASE_URL\n"
        "      models:\n"
        "        - name: gpt-5-mini\n"
        "          mode: chat\n"
        f"          max_prompts_per_batch: {batch_size}\n"
        "          pricing_tier: batch\n"
        f"    {CLAUDE}:\n"
        "      kind: anthropic       # key from ANTHROPIC_API_KEY\n"
        f"      base_url: {claude_url}\n"
        "      models:\n"
        f"        - name: {CLAUDE_MODEL}\n"
        "          mode: chat\n"
        f"          max_prompts_per_batch: {batch_size}\n"
        "          max_tokens: 256   # for requests that set none\n"
        "          prices_per_million: {input: 1.50, cached_input: 0.15, output: 7.50}\n")


def _claude_samples(path: Path) -> None:
    """The sample prompts again, each id prefixed, for the Anthropic-kind provider."""
    lines = []
    for line in SAMPLES.read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            item["id"] = CLAUDE_PREFIX + item["id"]
            lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n")


def _show_results(out: str) -> None:
    print(f"{'provider':<8} {'id':<17} {'status':<10} {'tries':>5}  output or error")
    for line in out.splitlines():
        record = json.loads(line)
        shown = record["output_text"] or f"ERROR {record['error_message']}"
        print(f"{record['provider']:<8} {record['id']:<17} {record['status']:<10} "
              f"{record['attempts']:>5}  {shown[:62]}")


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir()
    with fake_openai_server("--validating-seconds", "0.3", "--in-progress-seconds", "1.0",
                            "--finalizing-seconds", "0.2", *EVENTUALLY_CONSISTENT) as base_url, \
            fake_server_process("tracker.testing.fake_anthropic", "--in-progress-seconds", "1.0",
                                *ANTHROPIC_EVENTUALLY_CONSISTENT) as claude_url:
        print(f"fake OpenAI Batch API on {base_url}, eventually consistent as real ones are: "
              "404 for 0.5 s after a create, result files named 1 s after the status")
        print(f"fake Anthropic Message Batches API on {claude_url}: 404 for 0.5 s after a "
              "create and for its results")
        postgresql = args.db.get_backend_name() == "postgresql"
        db_url = _fresh_pg_database(args.db) if postgresql else _new_sqlite(args.db)
        config = RUN_DIR / "llm_config.yaml"
        batch_size = WORKERS_BATCH_SIZE if args.workers > 1 else BATCH_SIZE
        _write_config(config, claude_url, batch_size)
        claude_samples = RUN_DIR / "sample_prompts_claude.jsonl"
        _claude_samples(claude_samples)
        env = {**os.environ, **fake_credentials(base_url), "ANTHROPIC_API_KEY": FAKE_API_KEY,
               "TRACKER_DB": db_url, "TRACKER_CONFIG": str(config)}
        env.pop("ANTHROPIC_BASE_URL", None)
        print(f"\nthe demo's config, {config}: two providers, one of each kind")
        print(config.read_text().rstrip())
        if args.workers > 1:
            print(f"\n{args.workers} workers: batches of {WORKERS_BATCH_SIZE} prompts so there "
                  "are several to share")
        if postgresql:
            _tracker(env, "init")
        _tracker(env, "enqueue", str(SAMPLES), "--model", "gpt-5-mini")
        _tracker(env, "enqueue", str(claude_samples), "--provider", CLAUDE,
                 "--model", CLAUDE_MODEL)
        if args.workers > 1:
            _run_workers(env, args.workers)
        else:
            _tracker(env, "run", "--until-idle", "--poll-interval", "0.2")
        _tracker(env, "status")
        _tracker(env, "cost", "--by", "model")
        _tracker(env, "show", "sample-007")
        _tracker(env, "show", f"{CLAUDE_PREFIX}sample-003")
        _show_results(_tracker(env, "results", capture=True))
        _show_audit(db_url)


if __name__ == "__main__":
    main()
