"""Read-only snapshots behind one small interface, `Reader`, so the reports run the same SQL
over SQLAlchemy (either engine) or over the `sqlite3` module alone.

`tracker status`, `results` and `init` on an SQLite file that already holds the newest schema
read it through `sqlite_snapshot` and never load SQLAlchemy, whose import alone costs more than
the start-up budget of such a command (0.25 s). Anything else (a missing file, an older or
foreign schema, another URL form, PostgreSQL) goes through the engine as before, which
creates, migrates or names the problem.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from tracker.errors import DatabaseError
from tracker.store.migrations import latest_version

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

Params = Mapping[str, object]


class Reader(Protocol):
    """One read transaction: SQL with `:name` parameters, rows as dicts."""

    dialect: str

    def rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]: ...

    def stream(self, sql: str, params: Params | None = None) -> Iterator[dict[str, Any]]: ...

    def scalar(self, sql: str, params: Params | None = None) -> Any: ...


class SqliteReader:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    def stream(self, sql: str, params: Params | None = None) -> Iterator[dict[str, Any]]:
        try:
            cursor = self.conn.execute(sql, dict(params or {}))
            names = [column[0] for column in cursor.description]
            for row in cursor:
                yield dict(zip(names, row, strict=True))
        except sqlite3.Error as exc:
            raise DatabaseError(f"{self.path}: {exc}") from None

    def rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        return list(self.stream(sql, params))

    def scalar(self, sql: str, params: Params | None = None) -> Any:
        for row in self.stream(sql, params):
            return next(iter(row.values()))
        return None


class ConnectionReader:
    """A `Reader` over a SQLAlchemy connection inside `tracker.store.engine.read`."""

    def __init__(self, conn: Connection) -> None:
        from sqlalchemy import text

        self.conn = conn
        self.dialect = conn.dialect.name
        self._text = text

    def stream(self, sql: str, params: Params | None = None) -> Iterator[dict[str, Any]]:
        result = self.conn.execution_options(stream_results=True).execute(
            self._text(sql), dict(params or {}))
        for row in result:
            yield dict(row._mapping)

    def rows(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        return [dict(row._mapping)
                for row in self.conn.execute(self._text(sql), dict(params or {}))]

    def scalar(self, sql: str, params: Params | None = None) -> Any:
        return self.conn.execute(self._text(sql), dict(params or {})).scalar()


@contextmanager
def engine_snapshot(engine: Engine) -> Iterator[Reader]:
    from tracker.store.engine import read

    with read(engine) as conn:
        yield ConnectionReader(conn)


def sqlite_file(url: str) -> Path | None:
    """The file of a plain `sqlite:///PATH` URL; None for any other form (memory, query
    options, escapes, other drivers and engines)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    rest = url[len(prefix):]
    if not rest or rest == ":memory:" or any(char in rest for char in "?#%"):
        return None
    return Path(rest)


def _open_current(path: Path) -> sqlite3.Connection | None:
    """A connection inside a read transaction on `path`, if it is an SQLite file holding the
    newest schema; None otherwise (nothing created, nothing changed)."""
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=rw", uri=True,
                               timeout=30.0, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        conn.execute("BEGIN")
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    except sqlite3.Error:
        version = None
    if version != latest_version("sqlite"):
        conn.close()
        return None
    return conn


@contextmanager
def sqlite_snapshot(url: str) -> Iterator[SqliteReader | None]:
    """A `Reader` on the SQLite file of `url` when it already holds the newest schema, else
    None: the caller then opens the database through the engine."""
    path = sqlite_file(url)
    conn = None if path is None else _open_current(path)
    if conn is None or path is None:
        yield None
        return
    try:
        yield SqliteReader(conn, path)
    finally:
        conn.close()


@contextmanager
def snapshot(url: str, engine: Callable[[], Engine]) -> Iterator[Reader]:
    """A read transaction on `url`: over `sqlite3` alone when it can, else on `engine()`."""
    with sqlite_snapshot(url) as fast:
        if fast is not None:
            yield fast
            return
    with engine_snapshot(engine()) as reader:
        yield reader
