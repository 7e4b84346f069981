"""The schema files, the SQLModel classes and the migration runner."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlmodel import SQLModel

import tracker.models  # noqa: F401  (registers the tables)
from tracker.errors import DatabaseError
from tracker.store.engine import make_engine, migrate, open_database, read, write
from tracker.store.migrations import latest_version, migrations

#: Columns only one engine has: PostgreSQL's stand-in for SQLite's implicit rowid.
ENGINE_ONLY_COLUMNS = {"postgresql": {("items", "seq")}, "sqlite": set()}


def _columns(engine: Engine, conn: Connection, table: str) -> list[str]:
    if engine.dialect.name == "sqlite":
        return [r[1] for r in conn.execute(text(f"PRAGMA table_info({table})"))]
    return list(conn.execute(text(
        "SELECT column_name FROM information_schema.columns WHERE table_name = :t "
        "AND table_schema = current_schema()"), {"t": table}).scalars())


def test_models__match_the_sql_columns(engine: Engine) -> None:
    extra = ENGINE_ONLY_COLUMNS[engine.dialect.name]
    with read(engine) as conn:
        for name, table in SQLModel.metadata.tables.items():
            columns = [c for c in _columns(engine, conn, name) if (name, c) not in extra]
            assert columns, f"table {name} missing from schema/"
            assert set(columns) == {c.name for c in table.columns}, name


def test_both_engines_have_the_same_migrations() -> None:
    names = {dialect: [name for _, name, _ in migrations(dialect)]
             for dialect in ("sqlite", "postgresql")}
    assert names["sqlite"] == names["postgresql"]


def test_migrate__idempotent_and_versioned(db_url: str) -> None:
    dialect = make_engine(db_url).dialect.name
    engine = make_engine(db_url)
    assert migrate(engine) == latest_version(dialect)
    assert migrate(engine) == latest_version(dialect)
    with read(engine) as conn:
        versions = list(conn.execute(text("SELECT version FROM schema_version "
                                          "ORDER BY version")).scalars())
    engine.dispose()
    assert versions == list(range(1, latest_version(dialect) + 1))


def test_migrate__refuses_a_newer_schema(engine: Engine, db_url: str) -> None:
    with write(engine) as conn:
        conn.execute(text("INSERT INTO schema_version VALUES (999, '999_future', 0)"))
    other = make_engine(db_url)
    with pytest.raises(DatabaseError, match="schema version 999 is newer"):
        migrate(other)
    other.dispose()


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
