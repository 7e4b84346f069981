"""Statements on `file_deletions`: the provider files of ingested batches, to be deleted at
the provider (schema/*/007_file_deletions.sql)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, text

from tracker.store.dialect import skip_locked

_KINDS = ("input", "output", "error")


@dataclass(frozen=True)
class FileToDelete:
    provider: str
    file_id: str
    attempts: int


def schedule_batch_files(conn: Connection, batch_id: str, now: float) -> None:
    """Add the batch's input, output and error files (those it has) for deletion now."""
    for kind in _KINDS:
        conn.execute(text(
            "INSERT INTO file_deletions (provider, file_id, batch_id, kind, created_at, due_at) "
            f"SELECT provider, {kind}_file_id, id, :kind, :now, :now FROM batches "
            f"WHERE id = :batch AND {kind}_file_id IS NOT NULL "
            "ON CONFLICT (provider, file_id) DO NOTHING"),
            {"kind": kind, "now": now, "batch": batch_id})


def claim_due(conn: Connection, now: float, limit: int, claim_seconds: float,
              skip: frozenset[str] = frozenset()) -> list[FileToDelete]:
    """Up to `limit` files whose delete is due, of providers not in `skip` (paused), made not
    due for `claim_seconds` (a worker that dies holding them leaves them due after that)."""
    params: dict[str, object] = {"now": now, "n": limit}
    not_skipped = ""
    if skip:
        not_skipped = "AND provider NOT IN :skip "
        params["skip"] = sorted(skip)
    statement = text(
        "SELECT provider, file_id, attempts FROM file_deletions "
        f"WHERE deleted_at IS NULL AND due_at <= :now {not_skipped}"
        "ORDER BY due_at LIMIT :n" + skip_locked(conn))
    if skip:
        statement = statement.bindparams(bindparam("skip", expanding=True))
    claimed = [FileToDelete(r.provider, r.file_id, r.attempts)
               for r in conn.execute(statement, params)]
    for row in claimed:
        conn.execute(text("UPDATE file_deletions SET due_at = :until "
                          "WHERE provider = :p AND file_id = :f"),
                     {"until": now + claim_seconds, "p": row.provider, "f": row.file_id})
    return claimed


def record_deleted(conn: Connection, row: FileToDelete, now: float, note: str | None) -> None:
    conn.execute(text(
        "UPDATE file_deletions SET deleted_at = :now, attempts = attempts + 1, "
        "last_error = :note WHERE provider = :p AND file_id = :f AND deleted_at IS NULL"),
        {"now": now, "note": note, "p": row.provider, "f": row.file_id})


def record_failure(conn: Connection, row: FileToDelete, error: str, retry_at: float) -> None:
    conn.execute(text(
        "UPDATE file_deletions SET due_at = :at, attempts = attempts + 1, last_error = :error "
        "WHERE provider = :p AND file_id = :f AND deleted_at IS NULL"),
        {"at": retry_at, "error": error, "p": row.provider, "f": row.file_id})
