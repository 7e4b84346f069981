"""The `tracker` command line: parse, call one function, print. No logic lives here.

Imports are deferred to the commands that need them, so the cheap commands start fast.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import update_wrapper
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from tracker.api import DEFAULT_DB_URL, Tracker
from tracker.errors import TrackerError
from tracker.providers import registry
from tracker.providers.base import ProviderError
from tracker.redact import redact_secrets
from tracker.states import ItemStatus

if TYPE_CHECKING:
    from tracker.config import TrackerConfig

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """An expected failure: one line on stderr, exit 2."""

    exit_code = 2


def expected_errors(func: F) -> F:
    """Turn the tracker's expected failures into one line and exit 2 (no traceback)."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        try:
            return ctx.invoke(func, *args, **kwargs)
        except (TrackerError, ProviderError) as exc:
            raise BadInput(redact_secrets(str(exc))) from None

    return update_wrapper(wrapper, func)  # type: ignore[return-value]


@click.group()
@click.option("--db", "db_url", envvar="TRACKER_DB", default=DEFAULT_DB_URL, show_default=True,
              help="SQLAlchemy URL of the database (env TRACKER_DB).")
@click.option("--config", "config_path", envvar="TRACKER_CONFIG", default=None,
              help="Config file (env TRACKER_CONFIG; default ./llm_config.yaml if present, "
                   "else the packaged config/llm_config.yaml).")
@click.pass_context
def cli(ctx: click.Context, db_url: str, config_path: str | None) -> None:
    """Persistent, crash-safe tracker for LLM batch APIs."""
    ctx.obj = Tracker(db_url, config_path)
    ctx.call_on_close(ctx.obj.close)


pass_tracker = click.make_pass_decorator(Tracker)


@cli.command()
@pass_tracker
@expected_errors
def init(tracker: Tracker) -> None:
    """Create or migrate the database (idempotent).

    Example:

    \b
        tracker --db sqlite:///work.db init
    """
    from tracker.store.sqlite_file import current_file

    current = current_file(tracker.db_url)  # an up-to-date file: nothing to do
    if current is None:
        from tracker.store.engine import describe

        click.echo(f"database ready: {describe(tracker.engine)}", err=True)
    else:
        click.echo(f"database ready: {current}", err=True)


@contextmanager
def _open_input(file: str) -> Iterator[tuple[IO[bytes], str]]:
    if file == "-":
        yield sys.stdin.buffer, "<stdin>"
        return
    path = Path(file)
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        raise BadInput(f"{file}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{file}: is a directory") from None
    except OSError as exc:
        raise BadInput(f"{file}: cannot read: {exc.strerror}") from None
    with stream:
        yield stream, file


@cli.command()
@click.argument("file")
@click.option("--model", default=None, help="Model for lines that do not name their own.")
@click.option("--provider", default=None,
              help="Provider (a name under batch.providers) for lines that name none; default: "
                   "openai if configured, else the only provider configured.")
@click.option("--job", default=None,
              help="The job the items belong to (default: FILE's name without extension; "
                   "stdin for -).")
@click.option("--budget-usd", default=None, metavar="USD",
              help="The job's spending limit (billed + in flight + the next batch's worst "
                   "case); replaces an earlier one. Also: tracker budget JOB USD.")
@pass_tracker
@expected_errors
def enqueue(tracker: Tracker, file: str, model: str | None, provider: str | None,
            job: str | None, budget_usd: str | None) -> None:
    """Add the items of a JSONL FILE (or - for stdin); all or nothing.

    Each line: {"id": "...", "input_payload": {"messages": [...], ...}, "model": "...",
    "provider": "...", "metadata": {...}} ("model", "provider" and "metadata" optional;
    "metadata" is kept as given and returned with the result). Re-enqueueing an identical
    item is skipped.

    Example:

    \b
        tracker enqueue prompts.jsonl --model gpt-5-mini
    """
    from tracker.enqueue import job_name_for
    from tracker.enqueue_progress import progress_on_terminal

    with _open_input(file) as (raw, name), progress_on_terminal(raw, name) as stream:
        result = tracker.enqueue_jsonl(stream, name, job=job or job_name_for(file),
                                       model=model, provider=provider, budget_usd=budget_usd)
    click.echo(f"enqueued {result.enqueued} items, skipped {result.skipped} already present")


@cli.command()
@click.option("--until-idle", is_flag=True, help="Exit once nothing is queued, running or open.")
@click.option("--poll-interval", type=click.FloatRange(min=0.01), default=30.0,
              show_default=True, help="Seconds between status checks of a running batch.")
@click.option("--lease-ttl", type=click.FloatRange(min=0.5), default=30.0, show_default=True,
              help="Seconds without a heartbeat after which another worker may take over.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              envvar="TRACKER_LOG_FORMAT", show_default=True,
              help="Log lines on stderr as text, or as one JSON object each "
                   "(env TRACKER_LOG_FORMAT).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics at /metrics and a health check at /healthz.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics server listens on (0.0.0.0: every interface).")
@pass_tracker
@expected_errors
def run(tracker: Tracker, until_idle: bool, poll_interval: float, lease_ttl: float,
        log_format: str, metrics_port: int | None, metrics_host: str) -> None:
    """Run a worker: pack, submit, poll, download, retry, delete files; SIGTERM stops it.

    On SQLite one worker runs per database file; on PostgreSQL start as many as you like, on
    one machine or many: they share the batches and take over those of a worker that stops.

    Example:

    \b
        tracker run --poll-interval 30
    """
    from tracker.logs import setup_logging

    setup_logging(_secrets(tracker.config), log_format)
    address = None if metrics_port is None else (metrics_host, metrics_port)
    sys.exit(tracker.run(until_idle=until_idle, poll_interval=poll_interval,
                         lease_ttl=lease_ttl, metrics_address=address))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--job", default=None, help="Only this job's items and batches.")
@click.option("--watch", is_flag=True, help="Read and redraw every --interval seconds until "
                                            "Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between redraws with --watch.")
@pass_tracker
@expected_errors
def status(tracker: Tracker, as_json: bool, job: str | None, watch: bool,
           interval: float) -> None:
    """Progress of each job and model (items by status, rate, ETA, spend), open batches,
    budget, and any problems; with --job, that job's items and the batches holding them.

    Example:

    \b
        tracker status --json
        tracker status --job evals-2026-11 --watch
    """
    if as_json and watch:
        raise BadInput("--watch draws the view; it does not go with --json")

    def read() -> dict[str, Any]:
        return tracker.status(job)

    if as_json:
        click.echo(json.dumps(read()))
        return
    from tracker.status_view import render, stdout_console
    from tracker.status_view import watch as watch_status

    if watch:
        watch_status(read, interval, stdout_console())
    else:
        stdout_console().print(render(read()))


@cli.command()
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_tracker
@expected_errors
def show(tracker: Tracker, ident: str, as_json: bool) -> None:
    """One item (by id) or batch (by local or provider id): its fields, payload or files,
    output or error, and every transition with its reason.

    Example:

    \b
        tracker show sample-003
        tracker show batch_abc123 --json
    """
    from tracker.store.details import batch_detail, item_detail
    from tracker.store.reports import item_cost

    with tracker.snapshot() as reader:
        details = {"item": item_detail(reader, ident), "batch": batch_detail(reader, ident)}
    found = {kind: detail for kind, detail in details.items() if detail is not None}
    if "item" in found:
        found["item"]["cost_usd"] = item_cost(found["item"], tracker.report_prices())
    if not found:
        raise BadInput(f"no item or batch has the id {ident!r}")
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False))
        return
    for kind, detail in found.items():
        click.echo("\n".join(_item_lines(detail) if kind == "item" else _batch_lines(detail)))


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


def _history_lines(transitions: list[dict[str, Any]]) -> list[str]:
    lines = ["  history:"]
    for step in transitions:
        move = f"{step['from']} -> {step['to']}" if step["from"] else f"-> {step['to']}"
        lines.append(f"    {_when(step['at'])}  {move:<24} {step['reason'] or ''}".rstrip())
    return lines


def _n(value: object) -> str:
    return "-" if value is None else str(value)


def _item_lines(item: dict[str, Any]) -> list[str]:
    batch = item["batch_id"] or "none"
    if item["provider_batch_id"]:
        batch += f" ({item['provider_batch_id']} at the provider)"
    if item.get("custom_id"):
        batch += f", sent as custom_id {item['custom_id']}"
    lines = [
        f"item {item['id']}: {item['status']} ({item['status_reason'] or ''})",
        f"  job {item['job']}, provider {item['provider']}, model {item['model']}, "
        f"{item['attempts']} attempt(s), batch {batch}",
        f"  created {_when(item['created_at'])}, finished {_when(item['finished_at'])}",
        f"  tokens: prompt {_n(item['prompt_tokens'])} ({_n(item['cached_tokens'])} cached), "
        f"completion {_n(item['completion_tokens'])} ({_n(item['reasoning_tokens'])} "
        f"reasoning), total {_n(item['total_tokens'])} (estimated prompt {item['est_tokens']})",
        f"  cost: {_n(item['cost_usd'])} USD",
    ]
    if item["output_text"] is not None:
        lines.append(f"  output: {item['output_text']}")
    if item["error_message"] is not None:
        lines.append(f"  error: {item['error_message']} (code {_n(item['error_code'])}, "
                     f"HTTP {_n(item['error_status'])})")
    lines.append(f"  payload: {json.dumps(item['payload'], ensure_ascii=False)}")
    if item["metadata"] is not None:
        lines.append(f"  metadata: {json.dumps(item['metadata'], ensure_ascii=False)}")
    return lines + _history_lines(item["transitions"])


def _batch_lines(batch: dict[str, Any]) -> list[str]:
    counts = ", ".join(f"{status} {n}" for status, n in batch["items_by_status"].items())
    lines = [
        f"batch {batch['id']}: {batch['status']} ({batch['status_reason'] or ''})",
        f"  provider {batch['provider']} batch {batch['provider_batch_id'] or '-'} "
        f"({batch['provider_status'] or 'not created'}), model {batch['model']}",
        f"  files: input {batch['input_file_id'] or '-'}, output "
        f"{batch['output_file_id'] or '-'}, error {batch['error_file_id'] or '-'}",
        f"  items: {batch['item_count']} sent; provider counts {batch['request_completed']}"
        f"/{batch['request_total']} done, {batch['request_failed']} failed",
        f"  stored: {batch['succeeded_count']} succeeded, {batch['failed_count']} failed, "
        f"{batch['requeued_count']} re-queued, {batch['cancelled_count']} cancelled; "
        f"items whose last batch it is: {counts or 'none'}",
        f"  created {_when(batch['created_at'])}, submitted {_when(batch['submitted_at'])}, "
        f"ended {_when(batch['ended_at'])}, ingested {_when(batch['ingested_at'])}",
    ]
    if batch["job"]:
        lines.insert(1, f"  job {batch['job']}")
    if batch["budget_wait"]:
        lines.append(f"  {batch['budget_wait']}")
    elif batch["budget_hold_usd"] is not None:
        lines.append(f"  holds up to {batch['budget_hold_usd']} USD of the budget")
    if batch["duplicate_of"]:
        lines.append(f"  duplicate of {batch['duplicate_of']} (results discarded)")
    if batch["last_error"]:
        lines.append(f"  last error: {batch['last_error']}")
    for deletion in batch["file_deletions"]:
        state = (f"deleted {_when(deletion['deleted_at'])}" if deletion["deleted_at"]
                 else f"to delete ({deletion['attempts']} tries: {deletion['last_error']})")
        lines.append(f"  {deletion['kind']} file {deletion['file_id']}: {state}")
    return lines + _history_lines(batch["transitions"])


@cli.command()
@click.option("--status", "item_status", default=None,
              type=click.Choice([status.value for status in ItemStatus]))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file instead of stdout.")
@click.option("--job", default=None, help="Only this job's items.")
@pass_tracker
@expected_errors
def results(tracker: Tracker, item_status: str | None, fmt: str, output: str | None,
            job: str | None) -> None:
    """One record per item: id, status, output_text, error_message, attempts, batch, model,
    job, and the item's own metadata (JSON text in CSV).

    Example:

    \b
        tracker results --status succeeded --format csv -o results.csv
    """
    from tracker.store.reports import RESULT_FIELDS

    with click.open_file(output or "-", "w", encoding="utf-8") as out:
        records = tracker.result_records(job, item_status)
        if fmt == "csv":
            writer = csv.DictWriter(out, fieldnames=RESULT_FIELDS)
            writer.writeheader()
            writer.writerows({**record, "metadata": None if record["metadata"] is None
                              else json.dumps(record["metadata"], ensure_ascii=False)}
                             for record in records)
        else:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")


@cli.command()
@click.option("--job", default=None, help="Only this job's spend.")
@click.option("--by", type=click.Choice(["job", "model", "day", "batch"]), default="model",
              show_default=True, help="One row per job, model, day (UTC) or batch.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_tracker
@expected_errors
def cost(tracker: Tracker, job: str | None, by: str, as_json: bool) -> None:
    """What the work has cost: every result line the provider billed (from completed,
    expired and cancelled batches), priced at the config's batch prices in exact decimal;
    lines of duplicate provider batches are shown apart as waste.

    Example:

    \b
        tracker cost --by job
        tracker cost --job evals-2026-11 --by day --json
    """
    report = tracker.cost(job=job, by=by)
    if as_json:
        click.echo(json.dumps(report))
        return
    from tracker.cost_view import print_cost

    print_cost(report)


@cli.command()
@click.argument("job")
@click.argument("usd")
@pass_tracker
@expected_errors
def budget(tracker: Tracker, job: str, usd: str) -> None:
    """Set JOB's spending limit to USD dollars ("none" removes it). Batches of the job that
    wait for budget go on at the next check once they fit. The limit for the whole database
    is batch.budget_usd in the config.

    Example:

    \b
        tracker budget evals-2026-11 40
    """
    amount = tracker.set_budget(job, None if usd.lower() == "none" else usd)
    click.echo(f"job {job}: budget " + ("removed" if amount is None else f"{amount} USD"))


@cli.command()
@click.argument("provider_batch_id", required=False)
@click.option("--all", "all_open", is_flag=True, help="Cancel every open batch.")
@click.option("--job", default=None, help="Cancel this job: its open batches and queued items.")
@pass_tracker
@expected_errors
def cancel(tracker: Tracker, provider_batch_id: str | None, all_open: bool,
           job: str | None) -> None:
    """Cancel a batch (by provider or local id), --all open batches, or a --job (its open
    batches and its items still queued); the daemon stores partial results.

    Example:

    \b
        tracker cancel batch_abc123
        tracker cancel --job evals-2026-11
    """
    if sum((bool(provider_batch_id), all_open, job is not None)) != 1:
        raise BadInput("give one of PROVIDER_BATCH_ID, --all or --job")
    done = tracker.cancel(provider_batch_id, all=all_open, job=job)
    if job is None:
        click.echo(f"cancel requested for {len(done.batch_ids)} batch(es)")
        return
    click.echo(f"cancel requested for {len(done.batch_ids)} batch(es) of job {job}; "
               f"{done.queued_cancelled} queued item(s) cancelled")


@cli.command()
@click.option("--failed", is_flag=True, help="Re-queue failed items (the default).")
@click.option("--cancelled", is_flag=True, help="Re-queue cancelled items.")
@click.option("--job", default=None, help="Only this job's items.")
@pass_tracker
@expected_errors
def retry(tracker: Tracker, failed: bool, cancelled: bool, job: str | None) -> None:
    """Re-queue failed (and/or cancelled) items, each with a fresh set of attempts.

    Example:

    \b
        tracker retry --failed --cancelled
    """
    moved = tracker.retry(failed=failed or not cancelled, cancelled=cancelled, job=job)
    click.echo(f"re-queued {moved} items")


def _secrets(config: TrackerConfig) -> list[str]:
    """The key values in use: from the config, or the environment variables it names."""
    found = []
    for name, section in config.providers.items():
        variable = (section.api_key_env
                    or registry.provider_class(config.kind_of(name)).api_key_env)
        found.append(section.api_key or (os.environ.get(variable) if variable else None))
    return [value for value in found if value]


def main() -> None:
    cli.main(prog_name="tracker")
