"""`tracker cost` as a table for a person (the exact figures are in `--json`)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from tracker.pricing import shown_usd


def print_cost(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"Spend by {report['by']}" + (f" (job {report['job']})"
                                                     if report["job"] else ""),
                  title_justify="left")
    table.add_column(report["by"], no_wrap=True)
    for name in ("kind", "items", "prompt", "cached", "completion", "reasoning", "usd"):
        table.add_column(name, justify="left" if name == "kind" else "right", no_wrap=True)
    for row in report["rows"]:
        table.add_row(str(row["key"]), row["kind"], f"{row['items']:,}",
                      f"{row['prompt_tokens']:,}", f"{row['cached_tokens']:,}",
                      f"{row['completion_tokens']:,}", f"{row['reasoning_tokens']:,}",
                      shown_usd(row["usd"]))
    if report["rows"]:
        console.print(table)
    else:
        console.print("nothing billed yet")
    line = f"total {shown_usd(report['total_usd'])} (exact: {report['total_usd']})"
    if report["waste_usd"] != "0.00":
        line += f", of which waste (duplicate batches) {shown_usd(report['waste_usd'])}"
    console.print(line, highlight=False)
    if report["unpriced_models"]:
        console.print("no price for " + ", ".join(report["unpriced_models"])
                      + ": set prices_per_million for it in the config", highlight=False)
