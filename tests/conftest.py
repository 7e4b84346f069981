"""Shared fixtures: a migrated SQLite file per test (copied from a template built once)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tracker.db import make_engine, migrate
from tracker.testing.fake_openai import FakeOpenAI, ManualClock


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture
def db_path(template_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tracker.db"
    shutil.copyfile(template_db, path)
    return path


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{db_path}")
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    """One manual clock, shared by the tracker and the fake server: nothing sleeps."""
    return ManualClock()


@pytest.fixture
def server(clock: ManualClock) -> Iterator[FakeOpenAI]:
    """The fake Batch API on loopback, on the manual clock."""
    with FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=2.0,
                    finalizing_seconds=1.0, cancelling_seconds=1.0) as fake:
        yield fake
