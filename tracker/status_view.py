"""The human-readable `tracker status`: the report of `tracker.store.reports.status_of` drawn
with rich (a table of jobs and models, the open batches, then short lines for the rest).

Keys the report may lack (spend, projections, open batches, budget) are shown as "-" or left
out, so the view works on reports of any version. Amounts stay exact decimals until they are
rounded for display; a spend the tracker cannot price is "unknown", never 0.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from tracker.pricing import UNKNOWN, shown_usd

#: The width the view is laid out for; used off a terminal, where rich would take 80.
VIEW_WIDTH = 120
FINISHED = ("succeeded", "failed", "cancelled")
STATUS_COLUMNS = (("queued", "queued"), ("in_batch", "in batch"), ("succeeded", "succeeded"),
                  ("failed", "failed"), ("cancelled", "cancelled"))
#: Shown only when some row has items in them (most jobs have none).
OPTIONAL_STATUSES = ("failed", "cancelled")
BAR_WIDTH = 8


def duration(seconds: float | None) -> str:
    """`3m 20s`, `2h 05m`, `3d 4h`; `-` when unknown."""
    if seconds is None:
        return "-"
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


usd = shown_usd


def rate(items_per_hour: float | None) -> str:
    if items_per_hour is None:
        return "-"
    return f"{items_per_hour:,.0f}" if items_per_hour >= 10 else f"{items_per_hour:.1f}"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> Text:
    """Finished over all items, drawn with two glyphs so it reads without colour too."""
    filled = width if total and done >= total else (width * done // total if total else 0)
    shown = Text("█" * filled, style="green")
    shown.append("░" * (width - filled), style="grey42")
    shown.append(f" {100 * done // total if total else 0:>3}%")
    return shown


def _sum_usd(amounts: Iterable[str | None]) -> str | None:
    """The sum of decimal strings: `unknown` if any is, None if any is missing."""
    total = Decimal(0)
    for amount in amounts:
        if amount is None:
            return None
        if amount == UNKNOWN:
            return UNKNOWN
        total += Decimal(amount)
    return str(total)


@dataclass(frozen=True)
class Row:
    """One line of the jobs table: a job's items of one model, or the total."""

    job: str
    model: str
    items: Mapping[str, int]
    spent_usd: str | None
    projected_usd: str | None
    eta_seconds: float | None
    items_per_hour: float | None

    @property
    def total(self) -> int:
        return sum(self.items.values())

    @property
    def finished(self) -> int:
        return sum(self.items.get(status, 0) for status in FINISHED)


def _row(job: str, model: str, values: Mapping[str, Any]) -> Row:
    return Row(job=job, model=model, items=values.get("items", {}),
               spent_usd=values.get("spent_usd"), projected_usd=values.get("projected_usd"),
               eta_seconds=values.get("eta_seconds"),
               items_per_hour=values.get("items_per_hour"))


def job_rows(jobs: Mapping[str, Mapping[str, Any]]) -> list[Row]:
    """A row per job and model (one row per job when the report has no models)."""
    rows = []
    for name, job in jobs.items():
        models = job.get("models") or {}
        if len(models) == 1:
            (model,) = models
            rows.append(_row(name, model, {**models[model], "items": job["items"]}))
        elif models:
            rows.extend(_row(name, model, values) for model, values in models.items())
        else:
            rows.append(_row(name, "-", job))
    return rows


def total_row(jobs: Mapping[str, Mapping[str, Any]], rows: Sequence[Row]) -> Row:
    """Jobs run side by side: the whole is done when the slowest row is (no ETA if any row
    with work left has none)."""
    items: dict[str, int] = {}
    for job in jobs.values():
        for status, count in job["items"].items():
            items[status] = items.get(status, 0) + count
    open_rows = [row for row in rows if row.finished < row.total]
    etas = [row.eta_seconds for row in open_rows]
    rates = [row.items_per_hour for row in rows if row.items_per_hour is not None]
    return Row(
        job="total", model="", items=items,
        spent_usd=_sum_usd(job.get("spent_usd") for job in jobs.values()),
        projected_usd=_sum_usd(job.get("projected_usd") for job in jobs.values()),
        eta_seconds=None if not etas or None in etas else max(e for e in etas if e is not None),
        items_per_hour=sum(rates) if rates else None)


def _status_columns(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """Every status column, but failed and cancelled only when some row has any."""
    return [(status, heading) for status, heading in STATUS_COLUMNS
            if status not in OPTIONAL_STATUSES or any(row.items.get(status) for row in rows)]


@dataclass(frozen=True)
class Columns:
    """Which columns the jobs table shows: those the report has data for."""

    statuses: list[tuple[str, str]]
    models: bool
    pace: bool
    money: bool

    @classmethod
    def of(cls, jobs: Mapping[str, Mapping[str, Any]], rows: Sequence[Row]) -> Columns:
        return cls(statuses=_status_columns(rows),
                   models=any("models" in job for job in jobs.values()),
                   pace=any("eta_seconds" in job or "items_per_hour" in job
                            for job in jobs.values()),
                   money=any("spent_usd" in job for job in jobs.values()))


def jobs_table(jobs: Mapping[str, Mapping[str, Any]]) -> Table:
    rows = job_rows(jobs)
    columns = Columns.of(jobs, rows)
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)
    table.add_column("job", no_wrap=True, max_width=24)
    if columns.models:
        table.add_column("model", no_wrap=True, max_width=20)
    table.add_column("done", no_wrap=True)
    for _, heading in columns.statuses:
        table.add_column(heading, justify="right", min_width=len(heading))
    for heading in ("items/h", "ETA")[:2 if columns.pace else 0]:
        table.add_column(heading, justify="right", no_wrap=True)
    for heading in ("spent", "projected")[:2 if columns.money else 0]:
        table.add_column(heading, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*_cells(row, columns))
    if len(rows) > 1:
        table.add_section()
        table.add_row(*_cells(total_row(jobs, rows), columns), style="bold")
    return table


def _cells(row: Row, columns: Columns) -> list[RenderableType]:
    cells: list[RenderableType] = [row.job]
    if columns.models:
        cells.append(row.model)
    cells.append(bar(row.finished, row.total))
    cells.extend(f"{row.items.get(status, 0):,}" for status, _ in columns.statuses)
    if columns.pace:
        cells.extend((rate(row.items_per_hour), duration(row.eta_seconds)))
    if columns.money:
        cells.extend((usd(row.spent_usd), usd(row.projected_usd)))
    return cells


def _batch_status(batch: Mapping[str, Any]) -> str:
    provider_status = batch.get("provider_status")
    if provider_status and provider_status != batch["status"]:
        return f"{batch['status']}/{provider_status}"
    return str(batch["status"])


def _batch_done(batch: Mapping[str, Any]) -> str:
    """Requests the provider reports finished (completed or failed) over its total."""
    total = batch.get("request_total")
    if not total:
        return "-"
    done = (batch.get("request_completed") or 0) + (batch.get("request_failed") or 0)
    return f"{done:,}/{total:,}"


def open_batches_table(batches: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="open batches, oldest first", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)
    table.add_column("batch", no_wrap=True)
    table.add_column("provider id", no_wrap=True, max_width=16)
    table.add_column("job", no_wrap=True, max_width=20)
    table.add_column("model", no_wrap=True, max_width=16)
    table.add_column("status", overflow="fold", min_width=9)
    table.add_column("items", justify="right")
    table.add_column("done", justify="right")
    table.add_column("age", justify="right", no_wrap=True)
    for batch in batches:
        table.add_row(batch["id"], batch.get("provider_batch_id") or "-", batch.get("job"),
                      batch.get("model"), _batch_status(batch), f"{batch.get('items') or 0:,}",
                      _batch_done(batch), duration(batch.get("age_seconds")))
    return table


def budget_lines(budget: Mapping[str, Any] | None,
                 jobs: Mapping[str, Mapping[str, Any]]) -> list[Text]:
    """Shown when a limit (overall or a job's) is set or batches wait for room under one."""
    job_limits = {name: job["budget_usd"] for name, job in jobs.items()
                  if job.get("budget_usd") is not None}
    limit = budget.get("limit_usd") if budget else None
    waiting = list(budget.get("waiting") or []) if budget else []
    waiting_count = budget.get("waiting_batches", len(waiting)) if budget else 0
    if limit is None and not job_limits and not waiting_count:
        return []
    lines = []
    if budget is not None:
        lines.append(Text(
            f"budget: limit {usd(limit) if limit is not None else 'none'}, "
            f"spent {usd(budget.get('spent_usd'))}, in flight {usd(budget.get('in_flight_usd'))}"
            f", {waiting_count} batch(es) waiting"))
    for name, job_limit in job_limits.items():
        lines.append(Text(f"  job {name}: budget {usd(job_limit)}, spent "
                          f"{usd(jobs[name].get('spent_usd'))}"))
    for wait in waiting:
        lines.append(Text(f"  waiting: batch {wait['batch_id']} ({wait['job']}, "
                          f"{wait['model']}): {wait['reason']}", style="yellow"))
    return lines


def _ago(at: float | None, now: float) -> str:
    return "-" if at is None else f"{duration(now - at)} ago"


def _in(at: float | None, now: float) -> str:
    return "-" if at is None else f"in {duration(at - now)}"


def problem_lines(report: Mapping[str, Any], now: float) -> list[Text]:
    lines = []
    for paused in report.get("paused_providers", []):
        since = _ago(paused.get("paused_at"), now)
        probe = _in(paused.get("next_probe_at"), now)
        lines.append(Text(f"PAUSED {paused['provider']}: {paused['reason']} (since {since}, "
                          f"next probe {probe})", style="bold red"))
    for error in report.get("batch_errors", []):
        wait = error.get("next_try_in_seconds")
        when = f" (next try in {duration(wait)})" if wait else ""
        lines.append(Text(f"batch {error['id']} ({error['status']}): {error['last_error']}"
                          f"{when}", style="red"))
    return lines


def _counts(counts: Mapping[str, int]) -> str:
    shown = [f"{name} {count:,}" for name, count in counts.items() if count]
    return ", ".join(shown) or "none"


def housekeeping_lines(report: Mapping[str, Any]) -> list[Text]:
    """Batches, workers and provider files, a line each."""
    age = report.get("oldest_open_batch_age_seconds")
    lines = [Text(f"batches: {_counts(report.get('batches', {}))}"),
             Text(f"oldest open batch: {'none' if age is None else duration(age) + ' old'}")]
    workers = report.get("workers", [])
    lines.append(Text(f"workers: {len(workers) or 'none running'}"))
    lines.extend(Text(f"  pid {w['pid']} on {w['host']}: heartbeat "
                      f"{duration(w['heartbeat_age_seconds'])} ago, {w['claimed_batches']} open "
                      "batch(es) claimed") for w in workers)
    daemon = report.get("daemon")
    if daemon is not None:
        lines.append(Text(f"daemon lease: pid {daemon['pid']} on {daemon['host']} (heartbeat "
                          f"{duration(daemon['heartbeat_age_seconds'])} ago)"))
    files = report.get("provider_files_to_delete") or {}
    if files.get("pending"):
        failing = (f" ({files['failing']} failing: {files['last_error']})"
                   if files.get("failing") else "")
        lines.append(Text(f"provider files to delete: {files['pending']}{failing}"))
    return lines


def render(report: Mapping[str, Any], now: float | None = None) -> Group:
    """The whole view; `now` (epoch seconds) only dates the paused providers' times."""
    now = time.time() if now is None else now
    jobs = report.get("jobs", {})
    parts: list[RenderableType] = [jobs_table(jobs) if jobs else Text("no items")]
    if report.get("open_batches"):
        parts.extend((Text(), open_batches_table(report["open_batches"])))
    parts.append(Text())
    parts.extend(budget_lines(report.get("budget"), jobs))
    parts.extend(problem_lines(report, now))
    parts.extend(housekeeping_lines(report))
    return Group(*parts)


def stdout_console() -> Console:
    """Standard output, as wide as the terminal; off one (a pipe, a file), COLUMNS wide or
    `VIEW_WIDTH`."""
    on_terminal = sys.stdout.isatty() or os.environ.get("COLUMNS")
    return Console(width=None if on_terminal else VIEW_WIDTH)


def watch(read_report: Callable[[], Mapping[str, Any]], interval: float,
          console: Console) -> None:
    """Read and draw the report every `interval` seconds until Ctrl-C: in place on a terminal,
    elsewhere one view after another (rich's Live would show only the last)."""
    from rich.live import Live

    def view() -> Group:
        heading = Text(f"tracker status at {time.strftime('%H:%M:%S')}, every {interval:g}s; "
                       "Ctrl-C stops", style="dim")
        return Group(heading, render(read_report()))

    try:
        if not console.is_terminal:
            while True:
                console.print(view())
                console.print()
                time.sleep(interval)
        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(view(), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        return
