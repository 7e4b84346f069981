"""Pack: group queued items by provider and model into new `pending` batches."""

from __future__ import annotations

from sqlalchemy import Connection, text

from tracker import states
from tracker.context import Context, log, new_batch_id
from tracker.crashpoints import crash_point
from tracker.store.batches import lock_packing
from tracker.store.dialect import byte_length, enqueue_order

#: Bytes a JSONL line adds around the payload (custom_id, method, url, model).
LINE_OVERHEAD = 200
#: OpenAI: "You can create up to 2,000 batches per hour."
BATCHES_PER_HOUR = 2000


def pack(ctx: Context) -> int:
    """Make new `pending` batches from queued items. Returns how many."""
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
    return made


def _room(conn: Connection, provider: str, model: str, now: float,
          token_cap: int | None) -> tuple[bool, int | None, bool]:
    """Whether another batch may be made now, how many more tokens it may carry, and whether
    nothing is in flight (then one batch may go even if its first item alone is over the cap,
    or that item could never be sent)."""
    made_last_hour = conn.execute(
        text("SELECT count(*) FROM batches WHERE provider = :p AND created_at > :since "
             "AND duplicate_of IS NULL"),
        {"p": provider, "since": now - 3600},
    ).scalar_one()
    if made_last_hour >= BATCHES_PER_HOUR:
        return False, None, False
    if token_cap is None:
        return True, None, False
    in_flight = conn.execute(
        text("SELECT COALESCE(sum(est_tokens), 0) FROM batches WHERE provider = :p AND "
             "model = :m AND status IN ('pending', 'submitted', 'in_progress')"),
        {"p": provider, "m": model},
    ).scalar_one()
    return in_flight < token_cap, token_cap - in_flight, in_flight == 0


def _pack_one(ctx: Context, provider: str, model: str, limit: int,
              token_cap: int | None = None) -> bool:
    now = ctx.now()
    max_lines, max_bytes = ctx.batch_limits(provider)
    limit = min(limit, max_lines)
    with ctx.write() as conn:
        lock_packing(conn, provider, model)
        allowed, token_room, alone = _room(conn, provider, model, now, token_cap)
        if not allowed:
            return False
        # Sizes in UTF-8 bytes (the provider's limit), not characters.
        rows = conn.execute(
            text(
                f"SELECT id, {byte_length(conn, 'payload')} AS size, est_tokens FROM items "
                "WHERE status = 'queued' AND provider = :p AND model = :m AND not_before <= :now "
                f"ORDER BY {enqueue_order(conn)} LIMIT :n"
            ),
            {"p": provider, "m": model, "now": now, "n": limit},
        ).all()
        if not rows:
            return False
        model_bytes = len(model.encode())
        ids: list[str] = []
        size = tokens = 0
        for row in rows:
            line = row.size + len(row.id.encode()) + model_bytes + LINE_OVERHEAD
            if ids and size + line > max_bytes:
                break
            if (token_room is not None and tokens + row.est_tokens > token_room
                    and (ids or not alone)):
                break
            ids.append(row.id)
            size += line
            tokens += row.est_tokens
        if not ids:
            return False
        batch_id = new_batch_id()
        conn.execute(
            text(
                "INSERT INTO batches (id, provider, model, endpoint, status, status_reason, "
                "item_count, est_tokens, next_action_at, created_at, updated_at) "
                "VALUES (:id, :p, :m, :endpoint, 'pending', :reason, :n, :tokens, :now, :now, "
                ":now)"
            ),
            {"id": batch_id, "p": provider, "m": model, "endpoint": ctx.endpoint(provider, model),
             "reason": f"packed {len(ids)} items", "n": len(ids), "tokens": tokens, "now": now},
        )
        states.transition_many(
            conn, "item", ids, "queued", "in_batch", f"packed into batch {batch_id}", now,
            exprs={"attempts": "attempts + 1"}, batch_id=batch_id,
        )
    log.info("batch %s: packed %d items for %s/%s", batch_id, len(ids), provider, model)
    crash_point("after_pack")
    return True
