"""Statements on batches: reads return `Batch` rows; guarded writes that must match one row
raise `StaleBatch` when they do not (the row moved under us, so nothing is sent on the
strength of a stale read)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import BindParameter, Connection, Engine, Row, bindparam, text

from tracker.errors import StaleBatch
from tracker.providers.base import ProviderBatch
from tracker.states import OPEN_BATCH, RUNNING_BATCH, BatchStatus
from tracker.storable import storable_text
from tracker.store import spend
from tracker.store.engine import is_postgresql, read

if TYPE_CHECKING:
    from tracker.models import Batch

#: Orders a step may ask for its due batches in.
ORDERS = frozenset({"created_at", "next_action_at"})
#: A `status IN :statuses` list.
STATUSES: BindParameter[list[str]] = bindparam("statuses", expanding=True)
#: Batches not yet accepted or still running at the provider: a cancel can still matter.
CANCELLABLE = frozenset({BatchStatus.PENDING}) | RUNNING_BATCH



def as_batches(rows: Iterable[Row[Any]]) -> list[Batch]:
    """Rows of `batches` as `Batch` models. The table classes (sqlmodel, pydantic) are loaded
    on first use, so commands that only count rows start without them."""
    from tracker.models import Batch

    return [Batch.model_validate(row._mapping) for row in rows]

def _values(statuses: frozenset[BatchStatus] | frozenset[str]) -> list[str]:
    return sorted(str(s) for s in statuses)


def _update_one(conn: Connection, sql: str, params: dict[str, Any]) -> None:
    matched = conn.execute(text(sql), {**params, "pending": str(BatchStatus.PENDING)}).rowcount
    if matched != 1:
        raise StaleBatch(f"expected to update one row, updated {matched}: {sql.split()[1]} "
                         f"{params.get('id')}")


# -- reads ---------------------------------------------------------------------------------


def due(engine: Engine, statuses: frozenset[BatchStatus], order: str, now: float,
        limit: int) -> list[Batch]:
    """Batches in `statuses` whose next action time has come, in `order`, at most `limit`."""
    assert order in ORDERS, order
    with read(engine) as conn:
        rows = conn.execute(
            text("SELECT * FROM batches WHERE status IN :statuses AND "
                 "(next_action_at IS NULL OR next_action_at <= :now) "
                 f"ORDER BY COALESCE({order}, 0) LIMIT :n").bindparams(STATUSES),
            {"statuses": _values(statuses), "now": now, "n": limit},
        ).all()
    return as_batches(rows)


def status_of(conn: Connection, batch_id: str) -> BatchStatus:
    return BatchStatus(conn.execute(text("SELECT status FROM batches WHERE id = :id"),
                                    {"id": batch_id}).scalar_one())


def made_since(conn: Connection, provider: str, since: float) -> int:
    """Provider batches created for `provider` after `since` (duplicates, and batches that
    wait for budget, not counted)."""
    return int(conn.execute(
        text("SELECT count(*) FROM batches WHERE provider = :p AND created_at > :since "
             f"AND duplicate_of IS NULL AND NOT ({spend.WAITING_FOR_BUDGET})"),
        {"p": provider, "since": since}).scalar_one())


def tokens_in_flight(conn: Connection, provider: str, model: str) -> int:
    """Estimated prompt tokens of the batches not yet ended at the provider (a batch that
    waits for budget is not there: it must not hold other jobs back)."""
    return int(conn.execute(
        text("SELECT COALESCE(sum(est_tokens), 0) FROM batches WHERE provider = :p AND "
             f"model = :m AND status IN :statuses AND NOT ({spend.WAITING_FOR_BUDGET})"
             ).bindparams(STATUSES),
        {"p": provider, "m": model, "statuses": _values(CANCELLABLE)}).scalar_one())


def known_provider_ids(conn: Connection, batch_id: str) -> set[str]:
    """Provider batch ids already recorded for this local row or as its duplicates."""
    return set(conn.execute(
        text("SELECT provider_batch_id FROM batches WHERE provider_batch_id IS NOT NULL "
             "AND (id = :id OR duplicate_of = :id)"), {"id": batch_id}).scalars())


def claimed_provider_ids(conn: Connection, provider: str, ids: Iterable[str]) -> set[str]:
    """Of `ids`, the provider batch ids some local row (a batch or a duplicate) has recorded."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    return set(conn.execute(
        text("SELECT provider_batch_id FROM batches WHERE provider = :p "
             "AND provider_batch_id IN :ids").bindparams(bindparam("ids", expanding=True)),
        {"p": provider, "ids": wanted}).scalars())


def may_own_unrecorded(conn: Connection, provider: str, sizes: Iterable[int],
                       other_than: str, attempted_since: float) -> list[Batch]:
    """Other rows of the provider, of one of `sizes`, that may own a provider batch no row has
    recorded: a create whose answer was lost (or is being sent now), or a create sent more
    than once (a twin), since `attempted_since`, whatever the row's status now."""
    wanted = sorted(set(sizes))
    return as_batches(conn.execute(
        text("SELECT * FROM batches WHERE provider = :p AND id <> :id "
             "AND duplicate_of IS NULL AND create_attempted_at >= :since "
             "AND (provider_batch_id IS NULL OR create_attempts > 1) "
             "AND (item_count IN :sizes OR sent_request_count IN :sizes)"
             ).bindparams(bindparam("sizes", expanding=True)),
        {"p": provider, "id": other_than, "since": attempted_since, "sizes": wanted}))


def cancellable(conn: Connection, id_or_provider_id: str | None,
                job: str | None = None) -> list[Batch]:
    """The batch named by a local or provider id (whatever its status), or with None every
    batch a cancel can still reach (of `job`, if given)."""
    if id_or_provider_id is None:
        of_job = " AND job = :job" if job is not None else ""
        rows = conn.execute(text(f"SELECT * FROM batches WHERE status IN :statuses{of_job}")
                            .bindparams(STATUSES),
                            {"statuses": _values(CANCELLABLE), "job": job}).all()
    else:
        rows = conn.execute(text("SELECT * FROM batches WHERE provider_batch_id = :p "
                                 "OR id = :p"), {"p": id_or_provider_id}).all()
    return as_batches(rows)


# -- writes --------------------------------------------------------------------------------


def lock_packing(conn: Connection, provider: str, model: str, *,
                 whole_provider: bool = False) -> None:
    """Serialize packing for one provider and model until the transaction ends: two workers
    never count the same room or pick the same queued items (SQLite has one writer anyway).
    `whole_provider` serializes every model of the provider too, for a limit they share (the
    batches created per hour); that lock is always taken first."""
    if not is_postgresql(conn):
        return
    keys = ([f"tracker.pack:{provider}"] if whole_provider else []) + [
        f"tracker.pack:{provider}:{model}"]
    for key in keys:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})


def insert_packed(conn: Connection, batch_id: str, provider: str, model: str, job: str,
                  endpoint: str, reason: str, item_count: int, est_tokens: int,
                  now: float) -> None:
    conn.execute(
        text("INSERT INTO batches (id, provider, model, job, endpoint, status, status_reason, "
             "item_count, est_tokens, next_action_at, created_at, updated_at) "
             "VALUES (:id, :p, :m, :job, :endpoint, :status, :reason, :n, :tokens, :now, :now, "
             ":now)"),
        {"id": batch_id, "p": provider, "m": model, "job": job, "endpoint": endpoint,
         "status": str(BatchStatus.PENDING), "reason": reason, "n": item_count,
         "tokens": est_tokens, "now": now})


def insert_duplicate(conn: Connection, batch: Batch, duplicate_id: str, extra: ProviderBatch,
                     status: BatchStatus, reason: str, now: float) -> None:
    """A second provider batch for `batch`'s row, with a cancel requested (its results are
    discarded at ingest, its lines billed as waste): it holds the same worst case against the
    budget until it is closed."""
    conn.execute(
        text("INSERT INTO batches (id, provider, model, endpoint, status, status_reason, "
             "provider_batch_id, provider_status, item_count, cancel_requested, "
             "duplicate_of, input_file_created_at, provider_time_at_intent, "
             "create_attempted_at, next_action_at, created_at, updated_at, job, "
             "budget_hold_usd, request_total, request_completed, request_failed) VALUES "
             "(:id, :p, :m, :e, :status, :reason, :pbid, :ps, 0, 1, :dup, :filed, :clock, "
             ":now, :now, :now, :now, :job, :hold, :total, :completed, :failed)"),
        {"id": duplicate_id, "p": batch.provider, "m": batch.model, "e": batch.endpoint,
         "job": batch.job, "hold": batch.budget_hold_usd,
         "status": str(status), "pbid": extra.provider_batch_id,
         "ps": extra.provider_status, "dup": batch.id, "filed": batch.input_file_created_at,
         "clock": batch.provider_time_at_intent, "total": extra.request_counts.total,
         "completed": extra.request_counts.completed, "failed": extra.request_counts.failed,
         "now": now, "reason": reason})


def record_upload(conn: Connection, batch_id: str, file_id: str, created_at: int | None,
                  now: float) -> None:
    _update_one(conn,
                "UPDATE batches SET input_file_id = :f, input_file_created_at = :c, "
                "updated_at = :now WHERE id = :id AND status = :pending "
                "AND input_file_id IS NULL",
                {"f": file_id, "c": created_at, "now": now, "id": batch_id})


def record_provider_time(conn: Connection, batch_id: str, provider_time: int,
                         now: float) -> None:
    """The provider's clock before the row's first create (kept from the first reading):
    a batch a lost create answer hid was created at or after it."""
    conn.execute(text("UPDATE batches SET provider_time_at_intent = :t, updated_at = :now "
                      "WHERE id = :id AND status = :pending "
                      "AND provider_time_at_intent IS NULL"),
                 {"t": provider_time, "now": now, "id": batch_id,
                  "pending": str(BatchStatus.PENDING)})


def record_create_intent(conn: Connection, batch_id: str, now: float,
                         request_count: int | None = None) -> None:
    """Before a create is sent: reconcile must look for its batch before another is sent
    (of `request_count` requests, when the provider is searched by size)."""
    _update_one(conn,
                "UPDATE batches SET create_attempted_at = :now, updated_at = :now, "
                "create_attempts = create_attempts + 1, "
                "sent_request_count = COALESCE(:n, sent_request_count) "
                "WHERE id = :id AND status = :pending AND provider_batch_id IS NULL",
                {"now": now, "id": batch_id, "n": request_count})


def forget_create_intent(conn: Connection, batch_id: str, before: float | None, *,
                         uncount: bool = False) -> None:
    """The create was refused (no batch was made): restore the previous intent time; with
    `uncount` the attempt is not counted either (the refusal was one request's fault)."""
    conn.execute(text("UPDATE batches SET create_attempted_at = :before, "
                      "create_attempts = create_attempts - :uncount WHERE id = :id "
                      "AND status = :pending"),
                 {"before": before, "id": batch_id, "pending": str(BatchStatus.PENDING),
                  "uncount": 1 if uncount else 0})


def set_item_count(conn: Connection, batch_id: str, count: int, now: float) -> None:
    """The batch's item count and estimated tokens, after items left it before upload."""
    _update_one(conn, "UPDATE batches SET item_count = :n, est_tokens = (SELECT "
                      "COALESCE(sum(est_tokens), 0) FROM items WHERE batch_id = :id "
                      "AND status = 'in_batch'), updated_at = :now "
                      "WHERE id = :id AND status = :pending",
                {"n": count, "now": now, "id": batch_id})


def record_provider_status(conn: Connection, batch_id: str, status: ProviderBatch,
                           next_action_at: float, now: float) -> None:
    """Keep what the provider said about the batch; it answered well, so the back-off and
    the 404 clock start again."""
    errors = [e.__dict__ for e in status.errors]
    conn.execute(
        text("UPDATE batches SET provider_status = :ps, request_total = :t, "
             "request_completed = :c, request_failed = :f, "
             "input_file_id = COALESCE(input_file_id, :inp), "
             "output_file_id = :out, error_file_id = :err, batch_errors = :errors, "
             "failures = 0, last_error = :warning, next_action_at = :next, "
             "last_seen_at = :now, updated_at = :now WHERE id = :id"),
        {"ps": status.provider_status, "t": status.request_counts.total,
         "c": status.request_counts.completed, "f": status.request_counts.failed,
         "inp": status.input_file_id, "out": status.output_file_id,
         "err": status.error_file_id, "errors": json.dumps(errors) if errors else None,
         "next": next_action_at, "now": now, "id": batch_id,
         "warning": None if status.known_status else
         f"unknown provider status {status.provider_status!r}; treated as in_progress"},
    )


def created_at(conn: Connection, batch_id: str) -> float:
    return float(conn.execute(text("SELECT created_at FROM batches WHERE id = :id"),
                              {"id": batch_id}).scalar_one())


def add_failure(conn: Connection, batch_id: str) -> int:
    """Count one more failed call about the batch; returns the consecutive failures."""
    return int(conn.execute(
        text("UPDATE batches SET failures = failures + 1 WHERE id = :id RETURNING failures"),
        {"id": batch_id}).scalar_one())


def add_ingest_counts(conn: Connection, batch_id: str, succeeded: int, failed: int,
                      requeued: int, cancelled: int) -> None:
    """Add a run of ingested items to the batch's summary."""
    _update_one(conn, "UPDATE batches SET succeeded_count = succeeded_count + :s, "
                "failed_count = failed_count + :f, requeued_count = requeued_count + :r, "
                "cancelled_count = cancelled_count + :c WHERE id = :id",
                {"s": succeeded, "f": failed, "r": requeued, "c": cancelled, "id": batch_id})


def ingest_counts(conn: Connection, batch_id: str) -> tuple[int, int, int, int]:
    """The batch's succeeded, failed, re-queued and cancelled items stored so far."""
    row = conn.execute(
        text("SELECT succeeded_count, failed_count, requeued_count, cancelled_count "
             "FROM batches WHERE id = :id"), {"id": batch_id}).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def set_error(conn: Connection, batch_id: str, message: str, next_action_at: float,
              now: float) -> None:
    conn.execute(
        text("UPDATE batches SET last_error = :e, next_action_at = :t, updated_at = :now "
             "WHERE id = :id"),
        {"e": storable_text(message), "t": next_action_at, "now": now, "id": batch_id})


def mark_results_missing(conn: Connection, batch_id: str, now: float) -> None:
    conn.execute(text("UPDATE batches SET results_missing_since = :now WHERE id = :id"),
                 {"now": now, "id": batch_id})


def mark_requeue_unfinished(conn: Connection, batch_id: str) -> None:
    conn.execute(text("UPDATE batches SET requeue_unfinished = 1 WHERE id = :id"),
                 {"id": batch_id})


def request_cancel(conn: Connection, batch_ids: Sequence[str], now: float) -> set[str]:
    """Record an operator's wish to cancel (the intent; the worker sends it) on the batches a
    cancel can still reach. Returns the ids marked (one that ended meanwhile is not)."""
    if not batch_ids:
        return set()
    return set(conn.execute(
        text("UPDATE batches SET cancel_requested = 1, next_action_at = :now, "
             "updated_at = :now WHERE id IN :ids AND status IN :statuses RETURNING id")
        .bindparams(bindparam("ids", expanding=True), STATUSES),
        {"now": now, "ids": list(batch_ids), "statuses": _values(CANCELLABLE)}).scalars())


def any_open(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT EXISTS (SELECT 1 FROM batches WHERE status IN "
                                  ":statuses)").bindparams(STATUSES),
                             {"statuses": _values(OPEN_BATCH)}).scalar())
