"""Shared fixtures: a migrated database per test on each engine, one fixture parametrized.

SQLite files are copied from a template migrated once. PostgreSQL databases are created from a
template database (`CREATE DATABASE ... TEMPLATE`) on the server `TRACKER_TEST_PG_URL` names,
and dropped after the test; without that variable the PostgreSQL cases are left out and the
run says so in one line.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from tracker.store.engine import make_engine, migrate
from tracker.testing.fake_openai import FakeOpenAI, ManualClock

PG_URL_VARIABLE = "TRACKER_TEST_PG_URL"
ENGINES = ("sqlite", "postgresql")
_names = itertools.count()


def pg_admin_url() -> str | None:
    return os.environ.get(PG_URL_VARIABLE) or None


def _libpq(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _admin(sql: str) -> None:
    url = pg_admin_url()
    assert url is not None
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if pg_admin_url():
        return
    kept = [item for item in items if "[postgresql" not in item.nodeid
            and "-postgresql" not in item.nodeid]
    config._tracker_pg_left_out = len(items) - len(kept)  # type: ignore[attr-defined]
    items[:] = kept


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    left_out = getattr(config, "_tracker_pg_left_out", 0)
    if left_out:
        terminalreporter.write_line(
            f"PostgreSQL suite skipped ({left_out} tests): set {PG_URL_VARIABLE}="
            "postgresql+psycopg://USER@HOST:PORT/DBNAME (a server that may create databases) "
            "to run it, or use .ci/run, which starts one.")


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    url = pg_admin_url()
    if url is None:
        pytest.skip(f"{PG_URL_VARIABLE} is not set")
    name = f"tracker_template_{os.getpid()}"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}"')
    engine = make_engine(_libpq(url, name).replace("postgresql://", "postgresql+psycopg://", 1))
    migrate(engine)
    engine.dispose()
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_path(template_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tracker.db"
    shutil.copyfile(template_db, path)
    return path


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database's URL, on each engine."""
    if request.param == "sqlite":
        path = request.getfixturevalue("db_path")
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    url = pg_admin_url()
    assert url is not None
    name = f"tracker_test_{os.getpid()}_{next(_names)}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _libpq(url, name).replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
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
