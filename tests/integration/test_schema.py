"""The schema files, the SQLModel classes and the migration runner."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import SQLModel

import tracker.models  # noqa: F401  (registers the tables)
from tracker.db import latest_version, make_engine, migrate, open_database, read, write
from tracker.errors import DatabaseError


def test_models__match_the_sql_columns(engine: Engine) -> None:
    with read(engine) as conn:
        for name, table in SQLModel.metadata.tables.items():
            columns = [r[1] for r in conn.execute(text(f"PRAGMA table_info({name})"))]
            assert columns, f"table {name} missing from schema/"
            assert set(columns) == {c.name for c in table.columns}, name


def test_migrate__idempotent_and_versioned(db_path: Path) -> None:
    engine = make_engine(f"sqlite:///{db_path}")
    assert migrate(engine) == latest_version()
    assert migrate(engine) == latest_version()
    with read(engine) as conn:
        versions = list(conn.execute(text("SELECT version FROM schema_version")).scalars())
    assert versions == list(range(1, latest_version() + 1))


def test_migrate__refuses_a_newer_schema(engine: Engine, db_path: Path) -> None:
    with write(engine) as conn:
        conn.execute(text("INSERT INTO schema_version VALUES (999, '999_future', 0)"))
    with pytest.raises(DatabaseError, match="schema version 999 is newer"):
        migrate(make_engine(f"sqlite:///{db_path}"))


def test_open_database__refuses_a_foreign_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(DatabaseError, match="not a tracker database"):
        open_database(f"sqlite:///{path}")


def test_open_database__refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("hello, this is not a database\n" * 100)
    with pytest.raises(DatabaseError, match="not a tracker database"):
        open_database(f"sqlite:///{path}")


def test_open_database__new_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    open_database(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_open_database__unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "f.txt"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(DatabaseError, match="cannot create database"):
        open_database(f"sqlite:///{blocker}/sub/x.db")
