"""The one write path that creates items: chunked inserts in one transaction, through the
database driver itself (SQLAlchemy's per-row overhead would halve `tracker enqueue`). Given the
path of an up-to-date SQLite file instead of an engine, it opens the file with `sqlite3` alone
and SQLAlchemy is never loaded (`tracker.store.sqlite_file`)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from tracker.errors import DatabaseError
from tracker.store import sqlite_file

if TYPE_CHECKING:
    from sqlalchemy import Engine

#: Items inserted by one enqueue on PostgreSQL from which the table is analyzed after it.
ANALYZE_AFTER = 1000
#: The advisory lock key that serializes `tracker enqueue` runs on PostgreSQL (SQLite's
#: BEGIN IMMEDIATE does the same): each run stamps its rows later than every earlier run's.
ENQUEUE_LOCK = 7_350_002

_INSERT = (
    "INSERT INTO items (id, provider, model, payload, est_tokens, job, metadata, status, "
    "status_reason, attempts, not_before, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', 'enqueued', 0, 0, ?, ?)"
)
#: The creation row of each item's history (a per-row trigger would triple enqueue time).
_HISTORY = (
    "INSERT INTO transitions (entity, entity_id, from_status, to_status, at, reason) "
    "VALUES ('item', ?, NULL, 'queued', ?, 'enqueued')"
)

_COPY_ITEMS = ("COPY items (id, provider, model, payload, est_tokens, job, metadata, status, "
               "status_reason, attempts, not_before, created_at, updated_at) FROM STDIN")
_COPY_HISTORY = ("COPY transitions (entity, entity_id, from_status, to_status, at, reason) "
                 "FROM STDIN")

#: `(id, provider, model, payload, est_tokens, job, metadata, created_at, updated_at)`
ItemRow = tuple[str, str, str, str, int, str, str | None, float, float]

log = logging.getLogger("tracker")


class ItemInserter:
    """`with ItemInserter(engine) as inserter:` commits every chunk or, on any exception,
    none. Writers are serialized for the duration."""

    def __init__(self, database: Engine | Path) -> None:
        self._database = database
        self._pg = not isinstance(database, Path) and database.dialect.name == "postgresql"
        self._integrity_error: type[Exception] = (
            sqlite3.IntegrityError if isinstance(database, Path)
            else database.dialect.loaded_dbapi.IntegrityError)
        self._inserted = 0

    @property
    def waits_for_server(self) -> bool:
        """Each chunk's write waits on another process (PostgreSQL), which may work while
        the caller parses the next chunk (`tracker.writer_thread`)."""
        return self._pg

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self._pg else statement

    def __enter__(self) -> ItemInserter:
        if isinstance(self._database, Path):
            try:
                self._conn: Any = sqlite_file.connect(self._database)
            except sqlite3.Error as exc:
                raise self._database_error(exc) from None
            self._close: Callable[[], None] = self._conn.close
        else:
            raw = self._database.raw_connection()
            self._conn = cast(Any, raw.driver_connection)
            self._close = raw.close
        self._cur: Any = self._conn.cursor()
        try:
            if self._pg:
                self._cur.execute("SELECT pg_advisory_xact_lock(%s)", (ENQUEUE_LOCK,))
            else:
                self._cur.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:  # e.g. locked by a writer past the busy timeout
            self._close()
            raise self._database_error(exc) from None
        except BaseException:
            self._close()
            raise
        return self

    def _database_error(self, exc: sqlite3.Error) -> DatabaseError:
        if isinstance(self._database, Path):
            where = str(self._database)
        else:
            from tracker.store.engine import describe

            where = describe(self._database)
        return DatabaseError(f"{where}: {sqlite_file.plain_message(str(exc))}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._pg:
                (self._conn.rollback if exc_type else self._conn.commit)()
                if not exc_type and self._inserted >= ANALYZE_AFTER:
                    self._analyze()
            else:
                self._cur.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._close()

    def _analyze(self) -> None:
        """Fresh planner statistics after a large enqueue: without them the pack that follows
        walks every queued row for each chunk of ids it moves. The items are committed
        already, so a failure here is only logged."""
        try:
            self._cur.execute("ANALYZE items")
            self._conn.commit()
        except Exception as exc:
            self._conn.rollback()
            log.warning("ANALYZE items after the enqueue failed (%s); the items are stored",
                        exc)

    def latest_created_at(self) -> float | None:
        self._cur.execute("SELECT max(created_at) FROM items")
        value = self._cur.fetchone()[0]
        return None if value is None else float(value)

    def insert_chunk(self, rows: Sequence[ItemRow], stamp: float) -> bool:
        """Insert every row with its history row, or (an id already present) none."""
        if self._pg:  # COPY: one stream instead of a statement per row
            if not self._unless_present(lambda: self._copy(_COPY_ITEMS, [
                    (*row[:7], "queued", "enqueued", 0, 0, *row[7:]) for row in rows])):
                return False
            self._copy(_COPY_HISTORY, [("item", row[0], None, "queued", stamp, "enqueued")
                                       for row in rows])
            self._inserted += len(rows)
            return True
        if not self._unless_present(lambda: self._cur.executemany(self._sql(_INSERT), rows)):
            return False
        self._cur.executemany(self._sql(_HISTORY), [(row[0], stamp) for row in rows])
        return True

    def _copy(self, statement: str, rows: Sequence[tuple[object, ...]]) -> None:
        with self._cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def insert_one(self, row: ItemRow, stamp: float) -> bool:
        """Insert one row with its history row; False if its id is already present."""
        if not self._unless_present(lambda: self._cur.execute(self._sql(_INSERT), row)):
            return False
        self._cur.execute(self._sql(_HISTORY), (row[0], stamp))
        return True

    def _unless_present(self, insert: Callable[[], object]) -> bool:
        """Run `insert` inside a savepoint; undo it and return False if an id was present."""
        self._cur.execute("SAVEPOINT insert_items")
        try:
            insert()
        except self._integrity_error:
            self._cur.execute("ROLLBACK TO SAVEPOINT insert_items")
            self._cur.execute("RELEASE SAVEPOINT insert_items")
            return False
        self._cur.execute("RELEASE SAVEPOINT insert_items")
        return True

    def set_job_budget(self, job: str, budget_usd: Decimal, now: float) -> None:
        self._cur.execute(self._sql(
            "INSERT INTO jobs (name, budget_usd, created_at, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET budget_usd = excluded.budget_usd, "
            "updated_at = excluded.updated_at"), (job, str(budget_usd), now, now))
        self._cur.execute(self._sql(  # the job's batches that wait for budget: check again
            "UPDATE batches SET budget_wait = NULL, next_action_at = ?, updated_at = ? "
            "WHERE status = 'pending' AND budget_wait IS NOT NULL AND job = ?"),
            (now, now, job))

    def existing(self, item_id: str) -> tuple[tuple[str, str, str, str, str | None], float] | None:
        """`((provider, model, payload, job, metadata), created_at)` of a stored item."""
        self._cur.execute(self._sql("SELECT provider, model, payload, job, metadata, created_at "
                                    "FROM items WHERE id = ?"), (item_id,))
        row = self._cur.fetchone()
        return None if row is None else (tuple(row[:5]), float(row[5]))
