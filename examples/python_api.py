"""The tracker from Python: enqueue prompts with metadata, run until they are done, read the
results back, joined to your own rows by their metadata.

    python examples/python_api.py

With no `OPENAI_BASE_URL` set, it starts the project's fake Batch API on loopback, so it
needs no API key and no network. To send the prompts to OpenAI instead:

    OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=sk-... python examples/python_api.py

The database is a temporary SQLite file, removed at the end; give `Tracker` a path (or a
PostgreSQL URL) to keep yours.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from tracker import Tracker

COUNTRIES = ["France", "Japan", "Kenya", "Peru"]


def prompts() -> Iterator[dict[str, object]]:
    """One item per country; `metadata` comes back with each result."""
    for row, country in enumerate(COUNTRIES, start=1):
        yield {
            "id": f"capital-{row}",
            "input_payload": {"messages": [
                {"role": "user", "content": f"What is the capital of {country}?"}]},
            "metadata": {"row": row, "country": country},
        }


def ask(tracker: Tracker, poll_interval: float) -> int:
    tracker.enqueue(prompts(), job="capitals", model="gpt-5-mini")
    code = tracker.run(until_idle=True, poll_interval=poll_interval)  # blocks until done
    for result in tracker.results(job="capitals"):
        print(f"{result.id}  {result.status}  {result.output_text!r}  {result.metadata}")
    print("items:", tracker.status(job="capitals")["items"])
    return code


@contextmanager
def batch_api() -> Iterator[float]:
    """The configured Batch API, or else the fake one; yields the poll interval to use."""
    if os.environ.get("OPENAI_BASE_URL"):
        yield 30.0  # a real batch takes minutes to hours
        return
    from tracker.testing.fake_server import fake_credentials, fake_openai_server

    with fake_openai_server("--validating-seconds", "0.2", "--in-progress-seconds", "0.5",
                            "--finalizing-seconds", "0.1") as base_url:
        print(f"fake Batch API on {base_url}")
        os.environ.update(fake_credentials(base_url))
        yield 0.2


def main() -> int:
    with batch_api() as poll_interval, tempfile.TemporaryDirectory() as workdir, \
            Tracker(f"sqlite:///{workdir}/tracker.db") as tracker:
        return ask(tracker, poll_interval)


if __name__ == "__main__":
    sys.exit(main())
