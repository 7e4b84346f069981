"""Endpoints beyond chat for OpenAI-kind providers: `mode: embedding` (/v1/embeddings, the
vector kept in output_data, at most 50,000 inputs a batch), `mode: responses`
(/v1/responses, output_text from the response's output items) and `mode: completion`
(/v1/completions). The real steps, the real `openai` SDK over HTTP to the fake Batch API, a
real database on either engine, one manual clock."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.integration.daemon_harness import batches, drive, items, make_context
from tracker.config import TrackerConfig
from tracker.context import Context
from tracker.enqueue import enqueue_stream
from tracker.errors import InputError
from tracker.pricing import PriceBook
from tracker.providers import openai as openai_provider
from tracker.steps.pack import pack
from tracker.store.reader import engine_snapshot
from tracker.store.reports import results_of
from tracker.testing.fake_openai import FakeOpenAI, ManualClock

MODELS = [
    {"name": "text-embedding-3-small", "mode": "embedding", "max_prompts_per_batch": 10},
    {"name": "gpt-4.1-mini", "mode": "responses", "max_prompts_per_batch": 10},
    {"name": "gpt-3.5-turbo-instruct", "mode": "completion", "max_prompts_per_batch": 10,
     "prices_per_million": {"input": 0.75, "output": 1.0}},
]


def _context(engine: Engine, server: FakeOpenAI, clock: ManualClock,
             tmp_path: Path) -> Context:
    config = TrackerConfig.model_validate({"batch": {"providers": {"openai": {
        "models": MODELS}}}})
    return make_context(engine, server, clock, tmp_path, config)


def _enqueue(ctx: Context, *records: dict[str, Any]) -> None:
    data = io.BytesIO("".join(json.dumps(r) + "\n" for r in records).encode())
    enqueue_stream(ctx.engine, data, "modes.jsonl", ctx.config, now=ctx.now())


def test_modes__embedding_responses_and_completion_end_to_end(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = _context(engine, server, clock, tmp_path)
    _enqueue(ctx,
             {"id": "e1", "model": "text-embedding-3-small",
              "input_payload": {"input": ["first [usage:1000,0,0,0]", "second"]}},
             {"id": "r1", "model": "gpt-4.1-mini",
              "input_payload": {"input": "Say hi [usage:100,20,64,8]", "max_output_tokens": 50}},
             {"id": "c1", "model": "gpt-3.5-turbo-instruct",
              "input_payload": {"prompt": "Once upon [usage:10,5,0,0]", "max_tokens": 5}})
    drive(ctx, clock)
    assert {b.endpoint for b in batches(ctx)} == {
        "/v1/embeddings", "/v1/responses", "/v1/completions"}
    stored = items(ctx)
    assert {i: row.status for i, row in stored.items()} == {
        "e1": "succeeded", "r1": "succeeded", "c1": "succeeded"}
    vectors = json.loads(stored["e1"].output_data)["response"]["body"]["data"]
    assert [len(v["embedding"]) for v in vectors] == [8, 8]  # one vector per input
    assert stored["e1"].output_text is None
    assert stored["r1"].output_text == "echo: Say hi [usage:100,20,64,8]"
    assert (stored["r1"].prompt_tokens, stored["r1"].cached_tokens,
            stored["r1"].completion_tokens, stored["r1"].reasoning_tokens) == (100, 64, 20, 8)
    assert stored["c1"].output_text == "echo: Once upon [usage:10,5,0,0]"
    with engine_snapshot(engine) as reader:
        costs = {r["id"]: r["cost_usd"] for r in results_of(reader, prices=PriceBook(ctx.config))}
    # Packaged: text-embedding-3-small 0.01 in; gpt-4.1-mini 0.20 / 0.05 cached / 0.80 out.
    assert costs == {"e1": "0.00001",
                     "r1": "0.0000264",  # 36 x 0.20 + 64 x 0.05 + 20 x 0.80 = 26.4 millionths
                     "c1": "0.0000125"}  # 10 x 0.75 + 5 x 1.0 millionths


def test_embedding_batches__never_more_inputs_than_the_limit(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_provider, "MAX_EMBEDDING_INPUTS", 5)
    ctx = _context(engine, server, clock, tmp_path)
    _enqueue(ctx, *({"id": f"e{i}", "model": "text-embedding-3-small",
                     "input_payload": {"input": [f"a{i}", f"b{i}"]}} for i in range(5)))
    drive(ctx, clock)
    assert {row.status for row in items(ctx).values()} == {"succeeded"}
    sent = [sum(len(json.loads(line)["body"]["input"])
                for line in record.input_content.splitlines())
            for record in server.batches.values()]  # (input files are deleted after ingest)
    assert sent and max(sent) <= 5 and sum(sent) == 10


@pytest.mark.parametrize(("record", "message"), [
    ({"id": "x", "model": "text-embedding-3-small", "input_payload": {"messages": []}},
     "modes.jsonl:1: field 'input_payload.input' must be a non-empty string or list for an? "
     "embedding model"),
    ({"id": "x", "model": "gpt-3.5-turbo-instruct", "input_payload": {"prompt": ""}},
     "modes.jsonl:1: field 'input_payload.prompt' must be a non-empty string"),
    ({"id": "x", "model": "gpt-4.1-mini", "input_payload": {"input": 3}},
     "modes.jsonl:1: field 'input_payload.input' must be a non-empty string"),
])
def test_modes__a_request_without_its_mode_field_is_refused_naming_the_line(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path,
        record: dict[str, Any], message: str) -> None:
    ctx = _context(engine, server, clock, tmp_path)
    with pytest.raises(InputError, match=message):
        _enqueue(ctx, record)
    assert items(ctx) == {}


def test_embedding__one_request_over_the_limit_fails_alone(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_provider, "MAX_EMBEDDING_INPUTS", 5)
    ctx = _context(engine, server, clock, tmp_path)
    _enqueue(ctx, {"id": "a-big", "model": "text-embedding-3-small",
                   "input_payload": {"input": [f"x{i}" for i in range(7)]}},
             {"id": "b-small", "model": "text-embedding-3-small",
              "input_payload": {"input": ["y"]}})
    drive(ctx, clock)
    stored = items(ctx)
    assert (stored["a-big"].status, stored["b-small"].status) == ("failed", "succeeded")
    assert "larger than one batch may be" in stored["a-big"].error_message


def test_a_mode_changed_after_packing__items_are_packed_again_for_the_new_endpoint(
        engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> None:
    ctx = _context(engine, server, clock, tmp_path)
    chat = [dict(m, mode="chat") if m["name"] == "gpt-4.1-mini" else m for m in MODELS]
    ctx.config = TrackerConfig.model_validate({"batch": {"providers": {"openai": {
        "models": chat}}}})
    _enqueue(ctx, {"id": "r1", "model": "gpt-4.1-mini", "input_payload": {
        "input": "Say hi", "messages": [{"role": "user", "content": "Say hi"}]}})
    pack(ctx)  # packed for /v1/chat/completions
    ctx.config = TrackerConfig.model_validate({"batch": {"providers": {"openai": {
        "models": MODELS}}}})  # the user corrects the mode to responses
    drive(ctx, clock)
    stored = items(ctx)["r1"]
    assert (stored.status, stored.attempts) == ("succeeded", 1)
    assert [(b.endpoint, b.status) for b in batches(ctx)] == [
        ("/v1/chat/completions", "ingested"), ("/v1/responses", "ingested")]
    assert all(b.endpoint == "/v1/responses" for b in server.batches.values())
