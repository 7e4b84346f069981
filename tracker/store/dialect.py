"""The few SQL expressions that SQLite and PostgreSQL spell differently."""

from __future__ import annotations

from sqlalchemy import Connection

from tracker.store.engine import is_postgresql


def enqueue_order(conn: Connection, alias: str = "") -> str:
    """The column that orders items as they were enqueued: SQLite's implicit rowid, and
    PostgreSQL's identity column `seq`."""
    prefix = f"{alias}." if alias else ""
    return f"{prefix}seq" if is_postgresql(conn) else f"{prefix}rowid"


def byte_length(conn: Connection, column: str) -> str:
    """The size of a text column in UTF-8 bytes (the provider's limit), not characters."""
    return f"octet_length({column})" if is_postgresql(conn) else f"length(CAST({column} AS BLOB))"


def skip_locked(conn: Connection) -> str:
    """Row locks for a claim on PostgreSQL (SQLite has one writer and no row locks)."""
    return " FOR UPDATE SKIP LOCKED" if is_postgresql(conn) else ""
