"""Statements on batches that several steps share."""

from __future__ import annotations

from sqlalchemy import BindParameter, Connection, Engine, bindparam, text

from tracker.models import Batch
from tracker.store.engine import is_postgresql, read

#: Orders a step may ask for its due batches in.
ORDERS = frozenset({"created_at", "next_action_at"})
#: A `status IN :statuses` list.
STATUSES: BindParameter[list[str]] = bindparam("statuses", expanding=True)


def due(engine: Engine, statuses: frozenset[str], order: str, now: float,
        limit: int) -> list[Batch]:
    """Batches in `statuses` whose next action time has come, in `order`, at most `limit`."""
    assert order in ORDERS, order
    with read(engine) as conn:
        rows = conn.execute(
            text("SELECT * FROM batches WHERE status IN :statuses AND "
                 "(next_action_at IS NULL OR next_action_at <= :now) "
                 f"ORDER BY COALESCE({order}, 0) LIMIT :n").bindparams(STATUSES),
            {"statuses": sorted(statuses), "now": now, "n": limit},
        ).all()
    return [Batch.model_validate(row._mapping) for row in rows]


def lock_packing(conn: Connection, provider: str, model: str) -> None:
    """Serialize packing for one provider and model until the transaction ends: two workers
    never count the same room or pick the same queued items (SQLite has one writer anyway)."""
    if is_postgresql(conn):
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                     {"key": f"tracker.pack:{provider}:{model}"})
