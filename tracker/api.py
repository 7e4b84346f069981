"""The Python API: `Tracker`, one database and one config, with a method per operation.

    with Tracker("sqlite:///work.db") as tracker:
        tracker.enqueue([{"id": "q1", "input_payload": {"messages": [...]}}], job="evals")
        tracker.run(until_idle=True)
        for result in tracker.results(job="evals"):
            print(result.id, result.status, result.output_text)

The `tracker` command line is a thin layer over this class. Each method calls the modules
that do the work and imports them when it runs, so `import tracker` and the quick commands
stay fast: on an SQLite file that already holds the newest schema, `status`, `results` and
`enqueue` never load SQLAlchemy.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from tracker.errors import ConfigError, InputError
from tracker.states import ItemStatus

if TYPE_CHECKING:
    from decimal import Decimal

    from sqlalchemy import Engine

    from tracker.config import TrackerConfig
    from tracker.context import Context
    from tracker.enqueue import EnqueueResult
    from tracker.pricing import PriceBook
    from tracker.store.reader import Reader

#: `tracker.store.engine.DEFAULT_DB_URL`, repeated so importing this module does not load
#: SQLAlchemy.
DEFAULT_DB_URL = "sqlite:///tracker.db"
log = logging.getLogger("tracker")
#: `tracker.enqueue.DEFAULT_JOB`, repeated for the same reason.
DEFAULT_JOB = "default"
#: The name `enqueue` gives its items in error messages: `<items>:3: ...` is the third item.
ITEMS_NAME = "<items>"
#: Items serialized for `enqueue` stay in memory up to this size, then spill to disk.
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Result:
    """One item's outcome, a record of `tracker results` (`tracker.store.reports.RESULT_FIELDS`,
    in that order). `provider_batch_id` is of the batch its outcome came from; `metadata` is
    the item's own object as enqueued, or None."""

    id: str
    status: ItemStatus
    output_text: str | None
    error_message: str | None
    error_code: str | None
    attempts: int
    provider_batch_id: str | None
    model: str
    provider: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    job: str
    metadata: dict[str, Any] | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    #: What its result cost, an exact decimal string; "unknown" without a price; None for
    #: an item with no result.
    cost_usd: str | None


@dataclass(frozen=True)
class CancelResult:
    """What `Tracker.cancel` did: the local ids of the batches whose cancel it requested, and
    how many still-queued items of the job it cancelled (0 without `job`)."""

    batch_ids: list[str]
    queued_cancelled: int


class Tracker:
    """The tracker on one database (`db_url`, a SQLAlchemy URL) and one config file
    (`config_path`; by default `$TRACKER_CONFIG`, else `./llm_config.yaml` if it exists, else
    the packaged one). The database is created or migrated on first use; the config is read
    on first use. Use it as a context manager, or call `close()`."""

    def __init__(self, db_url: str = DEFAULT_DB_URL,
                 config_path: str | os.PathLike[str] | None = None) -> None:
        self.db_url = db_url
        self.config_path = config_path
        self._engine: Engine | None = None
        self._config: TrackerConfig | None = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the database connections (the tracker may be used again afterwards)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @property
    def config(self) -> TrackerConfig:
        if self._config is None:
            from tracker.config import default_config_path, load_config

            self._config = load_config(self.config_path or default_config_path())
        return self._config

    @property
    def prices(self) -> PriceBook:
        """The config's prices and budget; read without validating the whole config when it
        has not been loaded (the reporting commands start faster)."""
        from tracker.pricing import PriceBook

        if self._config is not None:
            return PriceBook(self._config)
        from tracker.config_path import default_config_path

        return PriceBook.read(Path(self.config_path) if self.config_path
                              else default_config_path())

    def report_prices(self) -> PriceBook:
        """`prices` for a report: a config that cannot be read does not stop `status` or
        `results`; amounts then use the packaged prices only (a warning says so)."""
        try:
            return self.prices
        except ConfigError as exc:
            from tracker.pricing import PriceBook

            log.warning("%s; amounts use the packaged prices only", exc)
            return PriceBook.packaged_only()

    @property
    def engine(self) -> Engine:
        """An engine on the migrated database (created on first use)."""
        if self._engine is None:
            from tracker.store.engine import open_database

            self._engine = open_database(self.db_url)
        return self._engine

    def snapshot(self) -> AbstractContextManager[Reader]:
        """A read transaction: SQLite files with the newest schema are read without loading
        SQLAlchemy (see `tracker.store.reader`)."""
        from tracker.store.reader import snapshot

        return snapshot(self.db_url, lambda: self.engine)

    def context(self, poll_interval: float = 30.0) -> Context:
        """What the steps need: the engine, the config, the providers (built on first use)."""
        from tracker.context import Context

        return Context(engine=self.engine, config=self.config, poll_interval=poll_interval)

    def enqueue(self, items: Iterable[Mapping[str, Any]], *, job: str = DEFAULT_JOB,
                model: str | None = None, provider: str | None = None,
                budget_usd: Decimal | str | None = None) -> EnqueueResult:
        """Add `items` to `job`, all or none. Each item is a dict in the JSONL line format:
        `id`, `input_payload` (`{"messages": [...], ...}`), optional `model` (else the `model`
        argument) and `metadata` (returned with the result). Identical items already present are
        skipped. A bad item raises `InputError` naming it by position: `<items>:3: ...`.
        `budget_usd` sets the job's spending limit, in the same transaction."""
        with _as_jsonl(items) as stream:
            return self.enqueue_jsonl(stream, ITEMS_NAME, job=job, model=model,
                                      provider=provider, budget_usd=budget_usd)

    def enqueue_jsonl(self, stream: IO[bytes], name: str, *, job: str = DEFAULT_JOB,
                      model: str | None = None, provider: str | None = None,
                      budget_usd: Decimal | str | None = None) -> EnqueueResult:
        """`enqueue` for items already written as JSONL lines (a file opened in binary
        mode); `name` names the stream in error messages."""
        from tracker.enqueue import check_budget, enqueue_stream
        from tracker.store.sqlite_file import current_file

        budget = None if budget_usd is None else check_budget(str(budget_usd))
        config = self.config
        database = current_file(self.db_url) or self.engine
        return enqueue_stream(database, stream, name, config, provider=provider,
                              default_model=model, job=job, budget_usd=budget,
                              now=time.time())

    def run(self, *, until_idle: bool = True, poll_interval: float = 30.0,
            lease_ttl: float = 30.0,
            metrics_address: tuple[str, int] | None = None) -> int:
        """Run a worker (`tracker run`) in this thread, which must be the main thread: it
        stops on SIGTERM or SIGINT, or with `until_idle` once nothing is queued, in flight
        or open. Returns the exit code: 0, or 1 if it lost its lease to another worker.
        `metrics_address` `(host, port)` serves Prometheus metrics and `/healthz`."""
        from tracker.daemon import Daemon

        ctx = self.context(poll_interval)
        _check_credentials(ctx)
        return Daemon(ctx, until_idle=until_idle, lease_ttl=lease_ttl,
                      metrics_address=metrics_address).run()

    def status(self, job: str | None = None) -> dict[str, Any]:
        """Item and batch counts by status (and per job), the oldest open batch, workers,
        paused providers, recent errors, provider files still to delete; with `job`, that
        job's items and the batches holding them (`tracker status --json`)."""
        from tracker.store.reports import status_of

        prices = self.report_prices()
        with self.snapshot() as reader:
            return status_of(reader, time.time(), job, prices=prices,
                             budget_limit=prices.budget_usd)

    def results(self, job: str | None = None,
                status: ItemStatus | str | None = None) -> Generator[Result, None, None]:
        """One `Result` per item (of `job`, with `status`), in enqueue order, from one read
        transaction, opened now and closed once the iterator is exhausted or closed."""
        return _as_results(self.result_records(job, status))

    def result_records(
            self, job: str | None = None, status: ItemStatus | str | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """`results` as plain dicts keyed by `RESULT_FIELDS`, ready for JSON or CSV."""
        from tracker.store.reports import results_of

        wanted = None if status is None else ItemStatus(status)
        prices = self.report_prices()
        stack = ExitStack()
        reader = stack.enter_context(self.snapshot())
        return _closing_at_end(results_of(reader, wanted, job, prices), stack)

    def cost(self, *, job: str | None = None, by: str = "model") -> dict[str, Any]:
        """What the work (of `job`) has cost, grouped `by` job, model, day or batch
        (`tracker cost --json`): amounts as exact decimal strings, "unknown" without a
        price."""
        from tracker.costs import cost_report

        prices = self.prices
        with self.snapshot() as reader:
            return cost_report(reader, prices, by=by, job=job)

    def set_budget(self, job: str, usd: Decimal | str | None) -> Decimal | None:
        """Set `job`'s spending limit (None removes it); its batches that wait for budget
        are checked again at once. Returns the limit set."""
        from tracker.enqueue import check_budget, check_job_name
        from tracker.store.engine import write
        from tracker.store.spend import set_job_budget

        amount = None if usd is None else check_budget(str(usd), "USD")
        with write(self.engine) as conn:
            set_job_budget(conn, check_job_name(job), amount, time.time())
        return amount

    def cancel(self, provider_batch_id: str | None = None, *, all: bool = False,
               job: str | None = None) -> CancelResult:
        """Cancel one batch (by provider or local id), every open batch (`all`), or a job
        (its open batches, and its items still queued, which end `cancelled` at once). The
        running worker stores the batches' partial output and marks the rest `cancelled`."""
        from tracker.actions import cancel_queued, request_cancel

        if sum((bool(provider_batch_id), all, job is not None)) != 1:
            raise InputError("give one of provider_batch_id, all=True or job")
        ctx = self.context()
        _check_credentials(ctx)
        batch_ids = request_cancel(ctx, provider_batch_id, all or job is not None, job)
        queued = 0 if job is None else cancel_queued(ctx.engine, job, time.time())
        return CancelResult(batch_ids=batch_ids, queued_cancelled=queued)

    def retry(self, *, failed: bool = True, cancelled: bool = False,
              job: str | None = None) -> int:
        """Re-queue failed and/or cancelled items (of `job`), each with a fresh set of
        attempts; returns how many."""
        from tracker.actions import retry_items

        return retry_items(self.engine, time.time(), failed=failed, cancelled=cancelled,
                           job=job)


def _as_results(records: Generator[dict[str, Any], None, None],
                ) -> Generator[Result, None, None]:
    with closing(records):
        for record in records:
            record["status"] = ItemStatus(record["status"])
            yield Result(**record)


def _closing_at_end(records: Iterator[dict[str, Any]],
                    stack: ExitStack) -> Generator[dict[str, Any], None, None]:
    with stack:
        yield from records


def _check_credentials(ctx: Context) -> None:
    """Build every enabled provider now, so a missing API key is one clear error up front."""
    from tracker.providers.base import PermanentProviderError

    for name, section in ctx.config.providers.items():
        if section.enabled:
            try:
                ctx.provider(name)
            except PermanentProviderError as exc:
                raise ConfigError(f"provider {name}: {exc.message}") from None


@contextmanager
def _as_jsonl(items: Iterable[Mapping[str, Any]]) -> Iterator[IO[bytes]]:
    """`items` as JSONL lines in a temporary file, rewound: every item is serialized before
    the first one is stored, so an item that fails to serialize leaves nothing written."""
    import tempfile

    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
        for number, item in enumerate(items, start=1):
            spool.write(_jsonl_line(item, number))
        spool.seek(0)
        yield spool


def _jsonl_line(item: Mapping[str, Any], number: int) -> bytes:
    """One item as a line. `NaN` and `Infinity` are written as Python writes them, so the
    enqueue parser refuses them naming the field; text that UTF-8 cannot encode (a lone
    surrogate) is written escaped, so the parser names that field too."""
    try:
        line = json.dumps(item, ensure_ascii=False)
        try:
            return line.encode("utf-8") + b"\n"
        except UnicodeEncodeError:
            return json.dumps(item).encode("ascii") + b"\n"
    except (TypeError, ValueError) as exc:
        raise InputError(f"{ITEMS_NAME}:{number}: cannot be written as JSON ({exc})") from None
