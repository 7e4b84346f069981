"""`tracker run --metrics-port PORT`: Prometheus text at `/metrics` and a health check at
`/healthz`, served from a thread of the daemon.

What the database knows (items and batches by status, result tokens, files to delete) is read
from it at each scrape, so every worker reports the same totals and a restart loses nothing;
what only this process sees (step errors, provider calls) is counted here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from tracker.costs import row_cost
from tracker.errors import TrackerError
from tracker.pricing import PriceBook, to_decimal
from tracker.store.ledger import usage_by
from tracker.store.progress import budget_report
from tracker.store.reports import status_of

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

    from tracker.config import TrackerConfig

class _DatabaseCollector(Collector):
    """Reads the totals from the database at each scrape."""

    def __init__(self, snapshot: Callable[[], Any], config: TrackerConfig) -> None:
        self._snapshot = snapshot
        self._prices = PriceBook(config)
        limit = config.batch.budget_usd
        self._budget_limit = None if limit is None else to_decimal(limit)

    def collect(self) -> Iterator[Metric]:
        items = GaugeMetricFamily("tracker_items", "Items by status.", labels=["status"])
        batches = GaugeMetricFamily("tracker_batches", "Batches by status.", labels=["status"])
        tokens = CounterMetricFamily("tracker_result_tokens", "Tokens of stored results, "
                                     "by provider, model and kind.",
                                     labels=["provider", "model", "kind"])
        files = GaugeMetricFamily("tracker_provider_files_to_delete",
                                  "Provider files of ingested batches not deleted yet.")
        with self._snapshot() as reader:
            report = status_of(reader, time.time())
            for status, count in report["items"].items():
                items.add_metric([status], float(count))
            for status, count in report["batches"].items():
                batches.add_metric([status], float(count))
            files.add_metric([], float(report["provider_files_to_delete"]["pending"]))
            for row in reader.rows(
                    "SELECT provider, model, sum(prompt_tokens) AS prompt, "
                    "sum(completion_tokens) AS completion FROM items "
                    "WHERE total_tokens IS NOT NULL GROUP BY provider, model"):
                for kind in ("prompt", "completion"):
                    tokens.add_metric([row["provider"], row["model"], kind],
                                      float(row[kind] or 0))
            yield from self._per_job(reader)
        yield from (items, batches, tokens, files)

    def _per_job(self, reader: Any) -> Iterator[Metric]:
        """Items and batches by job, and the spend: billed tokens and dollars (from the
        ledger; a model without a price has no dollar series: its lines are counted in
        tracker_unpriced_lines), the budget and what it holds."""
        items = GaugeMetricFamily("tracker_job_items", "Items by job and status.",
                                  labels=["job", "status"])
        for row in reader.rows("SELECT job, status, count(*) AS n FROM items "
                               "GROUP BY job, status"):
            items.add_metric([row["job"], row["status"]], float(row["n"]))
        batches = GaugeMetricFamily("tracker_job_batches", "Batches by job and status.",
                                    labels=["job", "status"])
        for row in reader.rows("SELECT job, status, count(*) AS n FROM batches "
                               "GROUP BY job, status"):
            batches.add_metric([row["job"], row["status"]], float(row["n"]))
        tokens = CounterMetricFamily(
            "tracker_billed_tokens", "Tokens of the lines providers billed, by job, model, "
            "kind (result or waste: duplicate batches) and token type.",
            labels=["job", "provider", "model", "kind", "type"])
        spent = CounterMetricFamily(
            "tracker_spent_usd", "US dollars billed, at the configured batch prices, by job, "
            "provider, model and kind (result or waste).",
            labels=["job", "provider", "model", "kind"])
        unpriced = CounterMetricFamily(
            "tracker_unpriced_lines", "Billed lines whose cost is unknown (no price for the "
            "model, or no usage on the line), by job, provider, model and kind.",
            labels=["job", "provider", "model", "kind"])
        for row in usage_by(reader, "job"):
            labels = [str(row["key"]), row["provider"], row["model"], row["kind"]]
            for kind in ("prompt", "cached", "completion", "reasoning"):
                tokens.add_metric([*labels, kind], float(row[f"{kind}_tokens"] or 0))
            amount = row_cost(row, self._prices)
            if amount is None:
                unpriced.add_metric(labels, float(row["items"]))
            else:
                spent.add_metric(labels, float(amount))
        budget = budget_report(reader, self._prices, self._budget_limit)
        in_flight = GaugeMetricFamily("tracker_budget_in_flight_usd", "The worst case held "
                                      "for batches sent and not yet closed.")
        in_flight.add_metric([], float(budget["in_flight_usd"]))
        waiting = GaugeMetricFamily("tracker_batches_waiting_for_budget",
                                    "Batches that wait because they do not fit a budget.")
        waiting.add_metric([], float(budget["waiting_batches"]))
        limits = GaugeMetricFamily("tracker_budget_limit_usd", "Spending limits: the "
                                   "database's (job=\"\") and each job's.", labels=["job"])
        if budget["limit_usd"] is not None:
            limits.add_metric([""], float(budget["limit_usd"]))
        for job, limit in budget["jobs"].items():
            limits.add_metric([job], float(limit))
        yield from (items, batches, tokens, spent, unpriced, in_flight, waiting, limits)


class Metrics:
    """The daemon's metrics, in a registry of its own."""

    def __init__(self, snapshot: Callable[[], Any], config: TrackerConfig) -> None:
        self.registry = CollectorRegistry()
        self.step_errors = Counter(
            "tracker_step_errors", "Failures met by the daemon's steps, by step and kind (a "
            "provider error's code or status, or the exception's class).",
            ["step", "kind"], registry=self.registry)
        self.provider_calls = Counter(
            "tracker_provider_calls", "HTTP calls to providers, by provider, endpoint and "
            "outcome (the HTTP status, or connection_error).",
            ["provider", "endpoint", "outcome"], registry=self.registry)
        self.registry.register(_DatabaseCollector(snapshot, config))

    def count_error(self, step: str, kind: str) -> None:
        self.step_errors.labels(step, kind).inc()

    def count_call(self, provider: str, endpoint: str, outcome: str) -> None:
        self.provider_calls.labels(provider, endpoint, outcome).inc()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Scrapes are not worth a log line each."""


@dataclass(frozen=True)
class MetricsServer:
    port: int  #: the port listened on (the one asked for, or the one given for 0)
    stop: Callable[[], None]


def serve(metrics: Metrics, host: str, port: int,
          health: Callable[[], tuple[bool, str]]) -> MetricsServer:
    """Serve `/metrics` and `/healthz` on `host:port` from a daemon thread. `TrackerError`
    naming the address if it cannot listen there."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            healthy, reason = health()
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{'ok' if healthy else 'unhealthy'}: {reason}\n".encode()]
        answer: Iterable[bytes] = metrics_app(environ, start_response)
        return answer

    try:
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise TrackerError(f"--metrics-port {port}: cannot listen on {host}:{port} "
                           f"({exc.strerror or exc})") from None
    thread = threading.Thread(target=server.serve_forever, name="tracker-metrics",
                              daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return MetricsServer(server.server_port, stop)
