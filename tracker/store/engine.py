"""The database: engines for SQLite and PostgreSQL, transactions, and applying `schema/`
migrations for the engine's dialect."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from tracker.crashpoints import writing
from tracker.errors import DatabaseError
from tracker.store.dialect import is_postgresql
from tracker.store.migrations import migrations
from tracker.store.sqlite_file import plain_message

DEFAULT_DB_URL = "sqlite:///tracker.db"
#: A PostgreSQL session that sits inside a transaction this long (its worker was paused or
#: hung) is ended by the server, so the row locks it holds cannot stall the other workers.
PG_IDLE_IN_TRANSACTION_MS = 60_000
#: Any number smaller than 2**31: the key of the advisory lock that serializes migrations.
_MIGRATION_LOCK = 7_350_001


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:":
        return None
    return Path(database)


def _create_private_file(path: Path) -> None:
    """A new SQLite file is readable by its owner only (it holds prompts and outputs)."""
    if path.exists():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if path.exists():
            return  # another process created it first
        raise DatabaseError(f"cannot create database {path}: a parent is not a directory"
                            ) from None
    except OSError as exc:
        raise DatabaseError(f"cannot create database {path}: {exc.strerror}") from None
    os.close(fd)


def make_engine(url: str = DEFAULT_DB_URL) -> Engine:
    """An engine with the tracker's settings: SQLite gets WAL, FULL sync and IMMEDIATE writes;
    PostgreSQL goes through psycopg 3 (`postgresql://` is read as `postgresql+psycopg://`)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "psycopg2"):
            raise DatabaseError(f"unsupported PostgreSQL driver {parsed.get_driver_name()!r}; "
                                "use a postgresql+psycopg:// URL")
        return _postgresql_engine(parsed.set(drivername="postgresql+psycopg"))
    if backend != "sqlite":
        raise DatabaseError(
            f"{backend} databases are not supported; use a sqlite:/// or "
            "postgresql+psycopg:// URL"
        )
    return _sqlite_engine(url)


def _postgresql_engine(url: URL) -> Engine:
    options = f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_MS} -c timezone=UTC"
    return create_engine(url, pool_pre_ping=True, connect_args={"options": options,
                                                                "connect_timeout": 10})


def _sqlite_engine(url: str) -> Engine:
    path = _sqlite_path(url)
    if path is not None:
        _create_private_file(path)
    engine = create_engine(url, connect_args={"timeout": 30.0, "isolation_level": None})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writers take the lock up front: a deferred transaction that later upgrades to write
        # can fail at once with SQLITE_BUSY instead of waiting for the busy timeout.
        readonly = conn.get_execution_options().get("tracker_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any exception."""
    with writing(), engine.begin() as conn:
        yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (does not block writers on SQLite)."""
    with engine.connect() as conn:
        if is_postgresql(engine):
            # One snapshot for every statement of the read, as SQLite's read transaction gives.
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        conn = conn.execution_options(tracker_readonly=True)
        with conn.begin():
            yield conn


def _current_version(conn: Connection) -> int | None:
    """The applied schema version; None for an empty database; error for a foreign one."""
    if is_postgresql(conn):
        listing = ("SELECT table_name FROM information_schema.tables "
                   "WHERE table_schema = current_schema()")
    else:
        listing = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    tables = {r[0] for r in conn.exec_driver_sql(listing)}
    if "schema_version" not in tables:
        if tables:
            raise DatabaseError(
                "this database is not a tracker database (it has tables but no schema_version)"
            )
        return None
    return conn.exec_driver_sql("SELECT max(version) FROM schema_version").scalar() or 0


def split_sql(sql: str) -> list[str]:
    """Statements of a script; trigger bodies (with inner semicolons) stay whole."""
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in current.splitlines()
    ):
        statements.append(current.strip())
    return statements


def _run_script(conn: Connection, sql: str) -> None:
    if is_postgresql(conn):
        # Sent whole and without parameters: PL/pgSQL bodies keep their semicolons and `%`.
        conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
        return
    for statement in split_sql(sql):
        conn.exec_driver_sql(statement)


def migrate(engine: Engine) -> int:
    """Create or upgrade the schema; idempotent and safe when two processes race. Returns the
    version now applied. Refuses a database from a newer tracker."""
    dialect = engine.dialect.name
    available = migrations(dialect)
    newest = max(v for v, _, _ in available)
    location = describe(engine)
    try:
        with engine.begin() as conn:  # one migrator at a time
            if is_postgresql(conn):
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            current = _current_version(conn) or 0
            if current > newest:
                raise DatabaseError(
                    f"{location}: schema version {current} is newer than this tracker "
                    f"supports ({newest}); upgrade tracker"
                )
            for version, name, sql in available:
                if version <= current:
                    continue
                _run_script(conn, sql)
                conn.execute(
                    text("INSERT INTO schema_version (version, name, applied_at) "
                         "VALUES (:v, :n, :t)"),
                    {"v": version, "n": name, "t": time.time()},
                )
    except DatabaseError as exc:
        if str(exc).startswith(location):
            raise
        raise DatabaseError(f"{location}: {exc}") from None
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseError(f"{location}: {_db_message(exc)}") from None
    return newest


def describe(engine: Engine) -> str:
    """The database for a message: the SQLite file, or the URL with its password hidden."""
    path = _sqlite_path(str(engine.url))
    return str(path) if path is not None else engine.url.render_as_string(hide_password=True)


def _db_message(exc: DBAPIError) -> str:
    original = getattr(exc, "orig", None)
    message = str(original) if original is not None else str(exc).splitlines()[0]
    # One line: libpq adds hints on lines of their own.
    return plain_message(message)


def open_database(url: str = DEFAULT_DB_URL) -> Engine:
    """An engine on a migrated database; every command goes through here."""
    engine = make_engine(url)
    migrate(engine)
    return engine
