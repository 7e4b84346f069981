"""An SQLite database file through Python's `sqlite3` module alone, for the commands whose
whole start-up budget (0.25 s) is less than importing SQLAlchemy: `status`, `results` and
`init` read, and `enqueue` writes, a file that already holds the newest schema this way.
Anything else (a missing file, an older or foreign schema, another URL form) goes through the
engine (`tracker.store.engine`), which creates, migrates or names the problem.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from tracker.store.migrations import latest_version

#: The engine's connection settings (`tracker.store.engine._sqlite_engine`), minus the
#: journal mode, which the file keeps (WAL since it was created).
_PRAGMAS = ("PRAGMA busy_timeout = 30000", "PRAGMA synchronous = FULL",
            "PRAGMA foreign_keys = ON")


def plain_path(url: str) -> Path | None:
    """The file of a plain `sqlite:///PATH` URL; None for any other form (memory, query
    options, escapes, other drivers and engines)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    rest = url[len(prefix):]
    if not rest or rest == ":memory:" or any(char in rest for char in "?#%"):
        return None
    return Path(rest)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to an existing file (never creates one), with the tracker's settings and
    transactions left to the caller (`BEGIN` / `BEGIN IMMEDIATE`)."""
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=rw", uri=True,
                           timeout=30.0, isolation_level=None)
    try:
        for pragma in _PRAGMAS:
            conn.execute(pragma)
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def is_current(conn: sqlite3.Connection) -> bool:
    """The file holds the newest schema, in WAL mode as the engine leaves it (False for any
    other file, tracker's or not)."""
    try:
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    except sqlite3.Error:
        return False
    return bool(version == latest_version("sqlite") and journal == "wal")


def plain_message(message: str) -> str:
    """A driver's error as one line a user can act on."""
    message = " ".join(part.strip() for part in message.splitlines() if part.strip())
    if "file is not a database" in message:
        return "not a tracker database (not an SQLite file)"
    if "unable to open" in message:
        return "cannot open the database file (check the path and its permissions)"
    if "readonly" in message or "read-only" in message:
        return "the database is read-only (check its permissions)"
    if "locked" in message:
        return "the database is locked by another process"
    return message


def open_current(url: str) -> tuple[Path, sqlite3.Connection] | None:
    """The file of `url` and a connection to it, if it is an SQLite file holding the newest
    schema; None otherwise (nothing created, nothing changed)."""
    path = plain_path(url)
    if path is None or not path.is_file():
        return None
    try:
        conn = connect(path)
    except sqlite3.Error:
        return None
    if not is_current(conn):
        conn.close()
        return None
    return path, conn


def current_file(url: str) -> Path | None:
    """The file of `url` if it is an SQLite file holding the newest schema."""
    opened = open_current(url)
    if opened is None:
        return None
    opened[1].close()
    return opened[0]
