"""The few SQL expressions that SQLite and PostgreSQL spell differently."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine


def is_postgresql(conn: Engine | Connection | str) -> bool:
    """`conn` is an engine, a connection, or a dialect's name (a `Reader`'s)."""
    return (conn if isinstance(conn, str) else conn.dialect.name) == "postgresql"


def enqueue_order(conn: Connection | str, alias: str = "") -> str:
    """The column that orders items as they were enqueued: SQLite's implicit rowid, and
    PostgreSQL's identity column `seq`."""
    prefix = f"{alias}." if alias else ""
    return f"{prefix}seq" if is_postgresql(conn) else f"{prefix}rowid"


def byte_length(conn: Connection | str, column: str) -> str:
    """The size of a text column in UTF-8 bytes (the provider's limit), not characters."""
    return f"octet_length({column})" if is_postgresql(conn) else f"length(CAST({column} AS BLOB))"


def skip_locked(conn: Connection | str) -> str:
    """Row locks for a claim on PostgreSQL (SQLite has one writer and no row locks)."""
    return " FOR UPDATE SKIP LOCKED" if is_postgresql(conn) else ""
