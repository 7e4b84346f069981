"""`tracker run --metrics-port`: Prometheus text at /metrics and a health check at /healthz,
scraped from a real daemon process while it runs, against the fake Batch API."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from tests.integration.daemon_harness import MODEL, drive, enqueue, make_config, make_context
from tests.integration.test_crash import Tracker, _poll_until, _wait, running, stop_cleanly
from tracker.metrics import Metrics, serve
from tracker.store.engine import make_engine, migrate, write
from tracker.store.reader import engine_snapshot
from tracker.store.spend import set_job_budget
from tracker.testing.fake_openai import FakeOpenAI, Fault, ManualClock


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics__scraped_during_a_run(tmp_path: Path, db_url: str) -> None:
    with FakeOpenAI(validating_seconds=3600) as server:  # the batch stays open while scraped
        server.add_fault(Fault(method="POST", path="/v1/batches", status=500, times=1))
        tracker = Tracker(tmp_path, server, max_prompts=5, db_url=db_url)
        tracker.enqueue_items({"a": "one", "b": "two"})
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        with running(tracker, extra_args=("--metrics-port", str(port))) as proc:
            _poll_until(lambda: tracker.query(
                "SELECT count(*) FROM batches WHERE status = 'submitted'") == [(1,)], timeout=60)
            _poll_until(lambda: _get(f"{base}/metrics")[0] == 200, timeout=30)
            samples = _samples(_get(f"{base}/metrics")[1])
            assert samples[("tracker_items", (("status", "in_batch"),))] == 2
            assert samples[("tracker_items", (("status", "queued"),))] == 0
            assert samples[("tracker_batches", (("status", "submitted"),))] == 1
            calls = {labels: value for (name, labels), value in samples.items()
                     if name == "tracker_provider_calls_total"}
            assert calls[(("endpoint", "POST /v1/files"), ("outcome", "200"),
                          ("provider", "openai"))] == 1
            assert calls[(("endpoint", "POST /v1/batches"), ("outcome", "500"),
                          ("provider", "openai"))] == 1
            assert calls[(("endpoint", "POST /v1/batches"), ("outcome", "200"),
                          ("provider", "openai"))] == 1
            errors = [dict(labels) for (name, labels), value in samples.items()
                      if name == "tracker_step_errors_total" and value >= 1]
            assert [e["step"] for e in errors] == ["submit"]
            status, body = _get(f"{base}/healthz")
            assert status == 200 and body.startswith("ok: lease held")
            stop_cleanly(proc)


def test_healthz__503_with_the_reason_when_unhealthy(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    migrate(engine)
    metrics = Metrics(lambda: engine_snapshot(engine), make_config())
    served = serve(metrics, "127.0.0.1", 0, lambda: (False, "no heartbeat for 40s"))
    try:
        assert _get(f"http://127.0.0.1:{served.port}/healthz") == (
            503, "unhealthy: no heartbeat for 40s\n")
        status, body = _get(f"http://127.0.0.1:{served.port}/metrics")
        assert status == 200 and 'tracker_items{status="queued"} 0.0' in body
    finally:
        served.stop()
        engine.dispose()


def test_metrics__jobs_spend_and_budget_from_the_database(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    config = make_config(max_prompts=10, prices_per_million={"input": 1, "output": 2})
    ctx = make_context(engine, server, clock, tmp_path, config)
    enqueue(ctx, {"a": "one [usage:100,10,0,0]", "b": "two [usage:200,20,0,3]"}, job="alpha")
    enqueue(ctx, {"c": "three [usage:1,1,0,0]"}, job="beta")
    drive(ctx, clock)
    with write(engine) as conn:
        set_job_budget(conn, "alpha", Decimal("5"), clock())
    served = serve(Metrics(lambda: engine_snapshot(engine), config), "127.0.0.1", 0,
                   lambda: (True, "test"))
    try:
        samples = _samples(_get(f"http://127.0.0.1:{served.port}/metrics")[1])
    finally:
        served.stop()
    assert samples[("tracker_job_items", (("job", "alpha"), ("status", "succeeded")))] == 2
    assert samples[("tracker_job_batches", (("job", "beta"), ("status", "ingested")))] == 1
    def billed(name: str, job: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"job": job, "kind": "result", "model": MODEL,
                                            "provider": "openai", **labels}.items())))]

    # alpha: (300 x 1 + 30 x 2) millionths; beta: (1 + 2) millionths
    assert billed("tracker_spent_usd_total", "alpha") == 0.00036
    assert billed("tracker_spent_usd_total", "beta") == 0.000003
    assert billed("tracker_billed_tokens_total", "alpha", type="reasoning") == 3
    assert samples[("tracker_budget_limit_usd", (("job", "alpha"),))] == 5
    assert samples[("tracker_batches_waiting_for_budget", ())] == 0


def test_metrics_port_in_use__one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken, FakeOpenAI() as server:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        tracker = Tracker(tmp_path, server, max_prompts=5)
        proc = tracker.start(extra_args=("--metrics-port", str(port)))
        assert _wait(proc) == 2
        errors = [line for line in tracker.log.read_text().splitlines() if "Error" in line]
        assert errors == [f"Error: --metrics-port {port}: cannot listen on 127.0.0.1:{port} "
                          "(Address already in use)"]
        tracker.close()
