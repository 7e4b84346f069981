"""Operator actions behind `tracker cancel` and `tracker retry`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from tracker.errors import InputError
from tracker.providers.base import ProviderError
from tracker.states import ItemStatus
from tracker.store import items
from tracker.store.engine import write
from tracker.store.transitions import move_items

if TYPE_CHECKING:
    from tracker.context import Context

log = logging.getLogger("tracker")


def request_cancel(ctx: Context, provider_batch_id: str | None, all_open: bool,
                   job: str | None = None) -> list[str]:
    """Record the wish to cancel (intent first), then ask the provider. Returns the local ids.
    The daemon finishes the job: it ingests partial output and cancels the rest. With `job`
    (and `all_open`), only that job's batches."""
    # Only `cancel` needs these (they load the SQLModel tables); `retry` starts without them.
    from tracker.store import batches
    from tracker.store.batches import CANCELLABLE

    now = ctx.now()
    with write(ctx.engine) as conn:
        rows = batches.cancellable(conn, None if all_open else provider_batch_id, job)
        if not all_open:
            if not rows:
                raise InputError(f"no batch {provider_batch_id!r} in this database")
            if rows[0].status not in CANCELLABLE:
                raise InputError(f"batch {provider_batch_id} has already ended "
                                 f"({rows[0].status}); nothing to cancel")
        marked = batches.request_cancel(conn, [row.id for row in rows], now)
        if not all_open and not marked:
            raise InputError(f"batch {provider_batch_id} has already ended; nothing to cancel")
    rows = [row for row in rows if row.id in marked]
    for row in rows:
        if row.provider_batch_id is None:
            continue
        try:
            ctx.provider(row.provider).cancel(row.provider_batch_id)
        except ProviderError as exc:
            log.warning("batch %s: cancel will be retried by the daemon: %s", row.id,
                        exc.message)
    return [row.id for row in rows]


def cancel_queued(engine: Engine, job: str, now: float) -> int:
    """Cancel the items of `job` still waiting to be packed; returns how many."""
    with write(engine) as conn:
        ids = items.ids_with_status(conn, ItemStatus.QUEUED, job)
        move_items(conn, ids, ItemStatus.QUEUED, ItemStatus.CANCELLED,
                   f"tracker cancel --job {job}", now, finished_at=now)
    return len(ids)


def retry_items(engine: Engine, now: float, *, failed: bool, cancelled: bool,
                job: str | None = None) -> int:
    """Send failed and/or cancelled items (of `job`, if given) again, with a fresh set of
    attempts (`attempts` keeps counting every send; the earlier ones become
    `free_attempts`)."""
    sources = [status for status, wanted in ((ItemStatus.FAILED, failed),
                                             (ItemStatus.CANCELLED, cancelled)) if wanted]
    moved = 0
    with write(engine) as conn:
        for source in sources:
            ids = items.ids_with_status(conn, source, job)
            move_items(conn, ids, source, ItemStatus.QUEUED, f"tracker retry --{source}", now,
                       {"free_attempts": "attempts"}, not_before=0.0, finished_at=None)
            moved += len(ids)
    return moved
