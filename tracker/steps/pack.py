"""Pack: group queued items by provider and model into new `pending` batches."""

from __future__ import annotations

from sqlalchemy import Connection

from tracker.context import Context, log, new_batch_id
from tracker.crashpoints import crash_point
from tracker.errors import StaleTransition
from tracker.store import batches, items
from tracker.store.transitions import move_queued_prefix

#: Bytes a JSONL line adds around the payload (custom_id, method, url, model).
LINE_OVERHEAD = 200


def pack(ctx: Context) -> int:
    """Make new `pending` batches from queued items (one a run under the daemon, which runs
    pack again as soon as submit has taken it). Returns how many."""
    made = 0
    for provider_name, section in ctx.config.providers.items():
        if not section.enabled or ctx.paused_reason(provider_name):
            continue
        for model in section.models:
            while made < ctx.batches_per_step and _pack_one(
                ctx, provider_name, model.name, model.max_prompts_per_batch,
                model.max_enqueued_tokens,
            ):
                made += 1
                if ctx.hand_off is not None:
                    # One batch a run under the daemon: submit takes it now and asks for the
                    # next once it has claimed this one, so the first batch is uploaded
                    # while the second is packed, not after.
                    ctx.hand_off_to("submit")
                    return made
    return made


def _room(conn: Connection, provider: str, model: str, now: float, token_cap: int | None,
          per_hour: int | None) -> tuple[bool, int | None, bool]:
    """Whether another batch may be made now, how many more tokens it may carry, and whether
    nothing is in flight (then one batch may go even if its first item alone is over the cap,
    or that item could never be sent)."""
    if per_hour is not None and batches.made_since(conn, provider, now - 3600) >= per_hour:
        return False, None, False
    if token_cap is None:
        return True, None, False
    in_flight = batches.tokens_in_flight(conn, provider, model)
    return in_flight < token_cap, token_cap - in_flight, in_flight == 0


def _pack_one(ctx: Context, provider: str, model: str, limit: int,
              token_cap: int | None = None) -> bool:
    now = ctx.now()
    job = items.queued_job(ctx.engine, provider, model, now)
    if job is None:
        return False
    max_lines, max_bytes = ctx.batch_limits(provider)
    limit = min(limit, max_lines)
    per_hour = ctx.batches_per_hour(provider)
    try:
        with ctx.write() as conn:
            batches.lock_packing(conn, provider, model, whole_provider=per_hour is not None)
            allowed, token_room, alone = _room(conn, provider, model, now, token_cap, per_hour)
            if not allowed:
                return False
            query = items.pack_query(
                conn, provider, model, job, now, limit=limit, max_bytes=max_bytes,
                line_bytes=len(model.encode()) + LINE_OVERHEAD, token_room=token_room,
                alone=alone)
            prefix = items.packable_prefix(conn, query)
            if not prefix.count:
                return False
            batch_id = new_batch_id()
            batches.insert_packed(conn, batch_id, provider, model, job,
                                  ctx.endpoint(provider, model),
                                  f"packed {prefix.count} items of job {job}", prefix.count,
                                  prefix.est_tokens, now)
            move_queued_prefix(conn, query, prefix, f"packed into batch {batch_id}",
                               batch_id=batch_id, at=now)
    except StaleTransition as exc:  # another writer changed the queue meanwhile (PostgreSQL)
        log.info("packing %s/%s: %s; packing again at the next tick", provider, model, exc)
        return False
    log.info("batch %s: packed %d items of job %s for %s/%s", batch_id, prefix.count, job,
             provider, model)
    crash_point("after_pack")
    return True
