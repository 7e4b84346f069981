"""Read-only snapshots behind one small interface, `Reader`, so the reports run the same SQL
over SQLAlchemy (either engine) or over the `sqlite3` module alone.

`tracker status`, `results` and `init` on an SQLite file that already holds the newest schema
read it through `sqlite_snapshot` and never load SQLAlchemy (see `tracker.store.sqlite_file`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tracker.errors import DatabaseError
from tracker.store.sqlite_file import open_current, plain_message

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, TextClause

Params = Mapping[str, object]


def sql_text(statement: str) -> TextClause:
    """`sqlalchemy.text(statement)`, importing SQLAlchemy only when a writer needs it, so a
    module that both reports and writes can be imported by the reports without it."""
    from sqlalchemy import text

    return text(statement)


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
            raise DatabaseError(f"{self.path}: {plain_message(str(exc))}") from None

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


@contextmanager
def sqlite_snapshot(url: str) -> Iterator[SqliteReader | None]:
    """A `Reader` on the SQLite file of `url` when it already holds the newest schema, else
    None: the caller then opens the database through the engine."""
    opened = open_current(url)
    if opened is None:
        yield None
        return
    path, conn = opened
    try:
        conn.execute("BEGIN")  # one snapshot for every statement of the read
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
