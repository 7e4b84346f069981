"""Helpers to drive the tracker's steps in-process against the fake Batch API, on one clock."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tracker.config import TrackerConfig
from tracker.context import Context
from tracker.daemon import is_idle, run_steps_once
from tracker.enqueue import enqueue_stream
from tracker.providers.anthropic import AnthropicBatchProvider
from tracker.providers.openai import OpenAIBatchProvider
from tracker.store.engine import read

MODEL = "gpt-5-mini"


def make_config(max_prompts: int = 3, max_attempts: int = 3,
                provider: dict[str, Any] | None = None, **model: Any) -> TrackerConfig:
    return TrackerConfig.model_validate({"batch": {"providers": {"openai": {
        "max_attempts": max_attempts, **(provider or {}),
        "models": [{"name": MODEL, "max_prompts_per_batch": max_prompts, **model}],
    }}}})


def make_context(engine: Engine, server: Any, clock: Any, tmp_path: Path,
                 config: TrackerConfig | None = None) -> Context:
    config = config or make_config()
    provider = OpenAIBatchProvider({
        "api_key": "sk-test-key-0123456789", "base_url": server.base_url, "max_retries": 0,
        "models": [m.model_dump() for m in config.provider("openai").models],
    })
    return Context(engine=engine, config=config, now=clock, poll_interval=1.0,
                   work_dir=tmp_path, providers={"openai": provider})


#: The Anthropic-kind provider of `make_anthropic_config`, and its model.
CLAUDE = "claude"
CLAUDE_MODEL = "claude-sonnet-4-5"


def make_anthropic_config(max_prompts: int = 3, max_attempts: int = 3,
                          provider: dict[str, Any] | None = None,
                          **model: Any) -> TrackerConfig:
    """One provider, `claude`, of kind anthropic (its requests default to 64 max_tokens)."""
    return TrackerConfig.model_validate({"batch": {"providers": {CLAUDE: {
        "kind": "anthropic", "max_attempts": max_attempts, **(provider or {}),
        "models": [{"name": CLAUDE_MODEL, "max_prompts_per_batch": max_prompts,
                    "max_tokens": 64, **model}],
    }}}})


def make_anthropic_context(engine: Engine, server: Any, clock: Any, tmp_path: Path,
                           config: TrackerConfig | None = None) -> Context:
    """The steps' context for `make_anthropic_config`, talking to a `FakeAnthropic`."""
    config = config or make_anthropic_config()
    provider = AnthropicBatchProvider({
        "api_key": "sk-ant-test-0123456789", "base_url": server.base_url, "max_retries": 0,
        "models": [m.model_dump() for m in config.provider(CLAUDE).models],
    })
    return Context(engine=engine, config=config, now=clock, poll_interval=1.0,
                   work_dir=tmp_path, providers={CLAUDE: provider})


def enqueue(ctx: Context, contents: dict[str, str], job: str = "default") -> None:
    """Enqueue items `{id: user message}` into `job` (for the context's only provider, or
    openai)."""
    lines = [json.dumps({"id": item_id, "input_payload": {
        "messages": [{"role": "user", "content": content}], "max_tokens": 20}})
        for item_id, content in contents.items()]
    data = io.BytesIO(("\n".join(lines) + "\n").encode())
    model = CLAUDE_MODEL if CLAUDE in ctx.config.providers else MODEL
    enqueue_stream(ctx.engine, data, "test.jsonl", ctx.config, default_model=model, job=job,
                   now=ctx.now())


def drive(ctx: Context, clock: Any, *, step: float = 1.0, max_ticks: int = 500) -> int:
    """Run every step, move the clock, until idle. Returns the ticks taken."""
    for tick in range(max_ticks):
        run_steps_once(ctx)
        if is_idle(ctx):
            return tick
        clock.advance(step)
    raise AssertionError(f"not idle after {max_ticks} ticks: {items_by_status(ctx)}")


def items(ctx: Context) -> dict[str, Any]:
    with read(ctx.engine) as conn:
        return {r.id: r for r in conn.execute(text("SELECT * FROM items"))}


def items_by_status(ctx: Context) -> dict[str, int]:
    with read(ctx.engine) as conn:
        return dict(conn.execute(text(
            "SELECT status, count(*) FROM items GROUP BY status")).all())


def batches(ctx: Context) -> list[Any]:
    with read(ctx.engine) as conn:
        return list(conn.execute(text("SELECT * FROM batches ORDER BY created_at, id")))


def history(ctx: Context, entity_id: str) -> list[tuple[str | None, str, str | None]]:
    with read(ctx.engine) as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT from_status, to_status, reason FROM transitions WHERE entity_id = :id "
            "ORDER BY id"), {"id": entity_id})]
