"""Several provider sections at once: two OpenAI-kind providers (`openai`, and `together`
with `kind: openai`), each with its own base URL, key and models, in one run. Items go to the
provider their line names, or to the default one. The real steps, each provider built from
the config by the registry, the real `openai` SDK over HTTP to two fake Batch APIs, a real
database on either engine, one manual clock."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.integration.daemon_harness import drive, items
from tracker.config import TrackerConfig
from tracker.context import Context
from tracker.costs import cost_report
from tracker.enqueue import enqueue_stream
from tracker.errors import InputError
from tracker.pricing import PriceBook
from tracker.store.reader import engine_snapshot
from tracker.store.reports import results_of
from tracker.testing.fake_openai import FakeOpenAI, ManualClock


@pytest.fixture
def together(clock: ManualClock) -> Iterator[FakeOpenAI]:
    """A second fake Batch API: another host speaking the same API."""
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=2.0,
                    finalizing_seconds=1.0, cancelling_seconds=1.0) as fake:
        yield fake


def _config(openai: FakeOpenAI, together: FakeOpenAI) -> TrackerConfig:
    return TrackerConfig.model_validate({"batch": {"providers": {
        "openai": {"api_key": "sk-openai-0123456789", "max_retries": 0,
                   "models": [{"name": "gpt-5-mini"}]},
        "together": {"kind": "openai", "api_key_env": "TOGETHER_TEST_KEY",
                     "base_url": together.base_url, "max_retries": 0,
                     "models": [{"name": "llama-3.3-70b",
                                 "prices_per_million": {"input": 0.5, "output": 1.5}},
                                {"name": "gpt-5-mini"}]}}}})


def _line(item_id: str, **fields: str) -> str:
    return json.dumps({"id": item_id, "input_payload": {
        "messages": [{"role": "user", "content": f"{item_id} [usage:100,10,0,0]"}]},
        **fields})


def _enqueue(ctx: Context, *lines: str, provider: str | None = None,
             model: str | None = None) -> None:
    data = io.BytesIO("".join(line + "\n" for line in lines).encode())
    enqueue_stream(ctx.engine, data, "mixed.jsonl", ctx.config, provider=provider,
                   default_model=model, now=ctx.now())


def test_two_openai_kind_providers__each_item_goes_to_its_own_host(
        engine: Engine, server: FakeOpenAI, together: FakeOpenAI, clock: ManualClock,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_TEST_KEY", "sk-together-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)  # "OpenAI itself" for the test
    config = _config(server, together)
    ctx = Context(engine=engine, config=config, now=clock, poll_interval=1.0,
                  work_dir=tmp_path)
    _enqueue(ctx, _line("o1"), _line("t1", provider="together", model="llama-3.3-70b"),
             _line("t2", provider="together"), model="gpt-5-mini")
    _enqueue(ctx, _line("t3"), provider="together", model="llama-3.3-70b")
    drive(ctx, clock)

    assert {i: (row.provider, row.model, row.status) for i, row in items(ctx).items()} == {
        "o1": ("openai", "gpt-5-mini", "succeeded"),
        "t1": ("together", "llama-3.3-70b", "succeeded"),
        "t2": ("together", "gpt-5-mini", "succeeded"),
        "t3": ("together", "llama-3.3-70b", "succeeded")}
    ran = {name: sorted(custom_id for _, custom_id, outcome in fake.executions
                        if outcome == "success")
           for name, fake in (("openai", server), ("together", together))}
    assert ran == {"openai": ["o1"], "together": ["t1", "t2", "t3"]}

    prices = PriceBook(config)
    with engine_snapshot(engine) as reader:
        costs = {r["id"]: (r["provider"], r["cost_usd"]) for r in results_of(reader,
                                                                             prices=prices)}
        report = cost_report(reader, prices, by="model")
    # The packaged table (OpenAI's own prices) prices openai's gpt-5-mini; together has a
    # base_url of its own, so only its config prices its models: its gpt-5-mini has none.
    assert costs == {"o1": ("openai", "0.0000225"), "t1": ("together", "0.000065"),
                     "t2": ("together", "unknown"), "t3": ("together", "0.000065")}
    assert report["unpriced_models"] == ["together/gpt-5-mini"]


def test_a_line_naming_a_provider_not_configured_is_refused_naming_the_line(
        engine: Engine, server: FakeOpenAI, together: FakeOpenAI, clock: ManualClock,
        tmp_path: Path) -> None:
    ctx = Context(engine=engine, config=_config(server, together), now=clock,
                  poll_interval=1.0, work_dir=tmp_path)
    with pytest.raises(InputError, match=r"mixed.jsonl:2: field 'provider': 'azure' is not "
                                         r"configured \(configured: openai, together\)"):
        _enqueue(ctx, _line("a"), _line("b", provider="azure"), model="gpt-5-mini")
    with pytest.raises(InputError, match=r"mixed.jsonl:1: field 'model': 'gpt-4o' is not "
                                         r"configured for provider 'together'"):
        _enqueue(ctx, _line("c", provider="together", model="gpt-4o"))
    assert items(ctx) == {}
