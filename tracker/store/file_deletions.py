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


def schedule_batch_files(conn: Connection, batch_id: str, now: float,
                         result_files: tuple[str | None, str | None] = (None, None)) -> None:
    """Add the batch's input, output and error files for deletion now. `result_files`: the
    output and error file ids its results were read from (kept on the row first, where the
    poll had not stored them). An input file that another batch not yet ingested was created
    from (a twin made by a create retried after a lost answer) waits for that one."""
    output_id, error_id = result_files
    conn.execute(text(
        "UPDATE batches SET output_file_id = COALESCE(output_file_id, :out), "
        "error_file_id = COALESCE(error_file_id, :err) WHERE id = :batch"),
        {"out": output_id, "err": error_id, "batch": batch_id})
    for kind in _KINDS:
        shared = ("AND NOT EXISTS (SELECT 1 FROM batches o WHERE o.input_file_id = "
                  "b.input_file_id AND o.id <> b.id AND o.status <> 'ingested') "
                  if kind == "input" else "")
        conn.execute(text(
            "INSERT INTO file_deletions (provider, file_id, batch_id, kind, created_at, due_at) "
            f"SELECT b.provider, b.{kind}_file_id, b.id, :kind, :now, :now FROM batches b "
            f"WHERE b.id = :batch AND b.{kind}_file_id IS NOT NULL {shared}"
            "ON CONFLICT (provider, file_id) DO NOTHING"),
            {"kind": kind, "now": now, "batch": batch_id})


def claim_due(conn: Connection, now: float, limit: int, claim_seconds: float,
              providers: frozenset[str]) -> list[FileToDelete]:
    """Up to `limit` files of `providers` whose delete is due, made not due for
    `claim_seconds` (a worker that dies holding them leaves them due after that)."""
    if not providers:
        return []
    statement = text(
        "SELECT provider, file_id, attempts FROM file_deletions "
        "WHERE deleted_at IS NULL AND due_at <= :now AND provider IN :providers "
        "ORDER BY due_at LIMIT :n" + skip_locked(conn)).bindparams(
            bindparam("providers", expanding=True))
    params = {"now": now, "n": limit, "providers": sorted(providers)}
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
