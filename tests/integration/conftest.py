"""Fixtures of the in-process step tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.integration.daemon_harness import make_context
from tracker.context import Context
from tracker.testing.fake_openai import FakeOpenAI, ManualClock


@pytest.fixture
def ctx(engine: Engine, server: FakeOpenAI, clock: ManualClock, tmp_path: Path) -> Context:
    """The steps' context on the shared manual clock, talking to the fake server."""
    return make_context(engine, server, clock, tmp_path)
