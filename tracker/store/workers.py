"""Workers and their claims on batches: the per-row leases that let many `tracker run`
processes share one PostgreSQL database (and the one daemon of an SQLite file).

Each worker has a row in `workers`, renewed by its heartbeat together with the batches it has
claimed. A worker claims due batches with `FOR UPDATE SKIP LOCKED` (two workers never wait on
or take the same rows) and keeps them until it stops; a claim whose worker stopped
heartbeating, or whose worker row is gone, is free for any other worker. Every claim adds one
to the batch's `claim_token`: a worker checks holder and token inside each transaction that
writes about the batch (`claim_held`), so once another worker has taken the batch over, the
first one's late writes are refused.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, bindparam, text

from tracker.states import BatchStatus
from tracker.store.batches import STATUSES, as_batches
from tracker.store.dialect import skip_locked
from tracker.store.engine import is_postgresql, read, write
from tracker.store.lease import process_alive, process_start

if TYPE_CHECKING:
    from tracker.models import Batch

WORKER_TTL = 30.0


def lease_time(conn: Connection, now: float | None) -> float:
    """`now`, or with None the database server's clock: workers on several machines then
    agree on when a lease runs out, whatever their own clocks say."""
    if now is not None:
        return now
    if is_postgresql(conn):
        return float(conn.execute(
            text("SELECT extract(epoch FROM clock_timestamp())::float8")).scalar_one())
    return time.time()  # SQLite: the database is a file on this machine


@dataclass(frozen=True)
class WorkerId:
    id: str
    host: str
    pid: int


def _start_of(worker_id: str) -> str | None:
    parts = worker_id.split(":")
    return parts[2] if len(parts) >= 5 and parts[2] != "-" else None


def _namespace_of(worker_id: str) -> str | None:
    parts = worker_id.split(":")
    return parts[3] if len(parts) >= 5 else None


def _pid_namespace() -> str:
    """This process's PID namespace: two containers may share a host name, and a pid means
    nothing across namespaces."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def register(engine: Engine, now: float | None, ttl: float = WORKER_TTL) -> WorkerId:
    """Add this process as a worker. Workers whose lease ran out, and workers of this host
    whose process is gone, are removed first: the batches a SIGKILLed worker claimed are free
    at once, not after its lease."""
    host, pid, namespace = socket.gethostname(), os.getpid(), _pid_namespace()
    me = WorkerId(f"{host}:{pid}:{process_start(pid) or '-'}:{namespace}:"
                  f"{uuid.uuid4().hex[:8]}", host, pid)
    with write(engine) as conn:
        now = lease_time(conn, now)
        local = conn.execute(text("SELECT id, pid FROM workers WHERE host = :h"),
                             {"h": host}).all()
        dead = [row.id for row in local if namespace != "-"
                and _namespace_of(row.id) == namespace
                and not process_alive(row.pid, _start_of(row.id))]
        _delete(conn, dead)
        conn.execute(text("DELETE FROM workers WHERE expires_at < :now"), {"now": now})
        conn.execute(text(
            "INSERT INTO workers (id, host, pid, started_at, heartbeat_at, expires_at) "
            "VALUES (:id, :host, :pid, :now, :now, :exp)"),
            {"id": me.id, "host": host, "pid": pid, "now": now, "exp": now + ttl})
    return me


def remove_others(conn: Connection, me: WorkerId) -> None:
    """Forget every other worker (the holder of SQLite's single-writer lease knows no other
    worker can be alive), which frees their claims at once."""
    conn.execute(text("DELETE FROM workers WHERE id <> :me"), {"me": me.id})


def _delete(conn: Connection, worker_ids: Iterable[str]) -> None:
    ids = list(worker_ids)
    if ids:
        conn.execute(text("DELETE FROM workers WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)), {"ids": ids})


def heartbeat(engine: Engine, me: WorkerId, now: float | None,
              ttl: float = WORKER_TTL) -> bool:
    """Renew this worker and its claims; remove workers whose lease ran out. False if this
    worker's own row is gone (it was paused past its lease and removed): it must stop."""
    with write(engine) as conn:
        now = lease_time(conn, now)
        alive = conn.execute(text(
            "UPDATE workers SET heartbeat_at = :now, expires_at = :exp WHERE id = :me"),
            {"now": now, "exp": now + ttl, "me": me.id}).rowcount == 1
        if not alive:
            return False
        if is_postgresql(conn):
            # Rows locked in id order, as a poll storing many listed statuses locks them: two
            # writers that lock several batch rows never wait on each other in a cycle.
            conn.execute(text(
                "SELECT id FROM batches WHERE claimed_by = :me AND status <> 'ingested' "
                "ORDER BY id FOR NO KEY UPDATE"), {"me": me.id})
        conn.execute(text(
            "UPDATE batches SET claim_expires_at = :exp, claim_heartbeat_at = :now "
            "WHERE claimed_by = :me AND status <> 'ingested'"),
            {"now": now, "exp": now + ttl, "me": me.id})
        conn.execute(text("DELETE FROM workers WHERE expires_at < :now"), {"now": now})
    return True


def deregister(engine: Engine, me: WorkerId) -> None:
    """Give back every claim and remove this worker (a clean stop)."""
    with write(engine) as conn:
        conn.execute(text(
            "UPDATE batches SET claimed_by = NULL, claim_expires_at = NULL "
            "WHERE claimed_by = :me"), {"me": me.id})
        conn.execute(text("DELETE FROM workers WHERE id = :me"), {"me": me.id})


def claim_due(engine: Engine, me: WorkerId, statuses: frozenset[BatchStatus], order: str,
              now: float, limit: int, ttl: float = WORKER_TTL, *,
              lease_now: float | None = None) -> list[Batch]:
    """Claim due batches in `statuses` until this worker holds `limit` of them, and return the
    ones it holds, in `order` (claims it already had come back too). One call claims at most
    its share of `limit` among the live workers, so the first worker to look does not take
    every batch that just became due. `now` says which batches are due; lease times are read
    at `lease_now` (None: the database's clock)."""
    due = ("b.status IN :statuses AND (b.next_action_at IS NULL OR b.next_action_at <= :now)")
    with read(engine) as conn:  # nothing due (an idle worker): no write transaction at all
        if conn.execute(text(f"SELECT 1 FROM batches b WHERE {due} LIMIT 1").bindparams(
                STATUSES), {"statuses": sorted(str(s) for s in statuses), "now": now}
        ).first() is None:
            return []
    with write(engine) as conn:
        lease_now = lease_time(conn, lease_now)
        params = {"me": me.id, "now": now, "lease_now": lease_now, "exp": lease_now + ttl,
                  "statuses": sorted(str(s) for s in statuses), "n": limit}
        held = conn.execute(text(
            f"SELECT count(*) FROM batches b WHERE {due} AND b.claimed_by = :me"
        ).bindparams(STATUSES), params).scalar_one()
        live = conn.execute(
            text("SELECT count(*) FROM workers WHERE expires_at >= :lease_now"), params
        ).scalar_one()
        room = min(limit - held, max(1, math.ceil(limit / max(live, 1))))
        if room > 0:
            conn.execute(text(
                "UPDATE batches SET claimed_by = :me, claim_token = claim_token + 1, "
                "claim_expires_at = :exp, claim_heartbeat_at = :lease_now WHERE id IN ("
                f"SELECT b.id FROM batches b WHERE {due} AND (b.claimed_by IS NULL "
                "OR b.claim_expires_at IS NULL OR b.claim_expires_at < :lease_now "
                "OR NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = b.claimed_by)) "
                f"ORDER BY COALESCE(b.{order}, 0) LIMIT :room{skip_locked(conn)})"
            ).bindparams(STATUSES), {**params, "room": room})
        rows = conn.execute(text(
            f"SELECT b.* FROM batches b WHERE {due} AND b.claimed_by = :me "
            f"ORDER BY COALESCE(b.{order}, 0) LIMIT :n").bindparams(STATUSES),
            params).all()
    return as_batches(rows)


def claim_held(conn: Connection, me: WorkerId, batch_id: str, token: int, *,
               lock: bool = False) -> bool:
    """Whether this worker still holds its claim on the batch: the batch names it with the
    same token. With `lock` (inside the transaction that writes), the batch row stays locked
    until that transaction ends, so no other worker can claim it before the write commits
    (its claim skips a locked row). SQLite's single writer needs no lock."""
    suffix = " FOR NO KEY UPDATE" if lock and is_postgresql(conn) else ""
    held = conn.execute(text(
        "SELECT id FROM batches WHERE id = :id AND claimed_by = :me AND claim_token = :t"
        + suffix), {"id": batch_id, "me": me.id, "t": token}).one_or_none()
    return held is not None


def registered(conn: Connection, me: WorkerId, *, lock: bool = False) -> bool:
    """Whether this worker's row still exists. With `lock`, it cannot be removed (by another
    worker that found its lease run out) until the writing transaction ends."""
    suffix = " FOR KEY SHARE" if lock and is_postgresql(conn) else ""
    found = conn.execute(text("SELECT id FROM workers WHERE id = :me" + suffix),
                         {"me": me.id}).one_or_none()
    return found is not None

