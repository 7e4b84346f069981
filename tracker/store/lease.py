"""The single-writer lease: one daemon per database, with a heartbeat.

A lease names its holder's host, pid and process start time. A new daemon takes it over when
it has expired, or at once when its holder is a dead process on this same host (so a restart
after SIGKILL does not wait for the expiry). An unexpired lease of a live holder is never taken;
an expired one is, even from a live process (paused by SIGSTOP or a VM, or stalled). Each
acquire takes the next fencing token: writes check it (`holds`) so the paused holder, when it
comes back, cannot write over the work of the daemon that took over.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from tracker.errors import LeaseHeld
from tracker.store.engine import write

LEASE_NAME = "daemon"
LEASE_TTL = 30.0


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid`, to tell a reused pid from the holder."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    if fields is not None and fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    if start is not None:
        current = process_start(pid)
        if current is not None and current != start:
            return False
    return True


@dataclass(frozen=True)
class Lease:
    holder: str
    host: str
    pid: int
    token: int


def _holder_id(host: str, pid: int) -> str:
    return f"{host}:{pid}:{process_start(pid) or '-'}:{uuid.uuid4().hex[:8]}"


def acquire(engine: Engine, now: float, ttl: float = LEASE_TTL) -> Lease:
    """Take the lease or raise `LeaseHeld` naming the live holder."""
    host, pid = socket.gethostname(), os.getpid()
    me = _holder_id(host, pid)
    with write(engine) as conn:
        row = conn.execute(
            text("SELECT holder, host, pid, heartbeat_at, expires_at FROM daemon_lease "
                 "WHERE name = :n"), {"n": LEASE_NAME}
        ).one_or_none()
        if row is not None and row.expires_at > now:
            start = row.holder.split(":")[2] if row.holder.count(":") >= 3 else None
            same_host_dead = row.host == host and not process_alive(
                row.pid, None if start == "-" else start)
            if not same_host_dead:
                raise LeaseHeld(
                    f"another tracker daemon holds this database (pid {row.pid} on "
                    f"{row.host}, last heartbeat {max(now - row.heartbeat_at, 0):.0f}s ago); "
                    "stop it first, or wait for its lease to expire"
                )
        token = conn.execute(
            text(
                "INSERT INTO daemon_lease (name, holder, host, pid, started_at, heartbeat_at, "
                "expires_at, token) VALUES (:n, :h, :host, :pid, :now, :now, :exp, 1) "
                "ON CONFLICT (name) DO UPDATE SET holder = :h, host = :host, pid = :pid, "
                "started_at = :now, heartbeat_at = :now, expires_at = :exp, "
                "token = daemon_lease.token + 1 RETURNING token"
            ),
            {"n": LEASE_NAME, "h": me, "host": host, "pid": pid, "now": now,
             "exp": now + ttl},
        ).scalar_one()
    return Lease(holder=me, host=host, pid=pid, token=token)


def holds(conn: Connection, token: int) -> bool:
    """Whether the lease still carries `token` (call inside the transaction that writes)."""
    current = conn.execute(text("SELECT token FROM daemon_lease WHERE name = :n"),
                           {"n": LEASE_NAME}).scalar()
    return current == token


def renew(engine: Engine, lease: Lease, now: float, ttl: float = LEASE_TTL) -> bool:
    """Extend the lease; False if it is no longer ours (then the daemon must stop)."""
    with write(engine) as conn:
        return conn.execute(
            text("UPDATE daemon_lease SET heartbeat_at = :now, expires_at = :exp "
                 "WHERE name = :n AND holder = :h AND token = :t"),
            {"now": now, "exp": now + ttl, "n": LEASE_NAME, "h": lease.holder,
             "t": lease.token},
        ).rowcount == 1


def release(engine: Engine, lease: Lease) -> None:
    """Let the lease expire now. The row stays, so the next holder's token is higher than
    every earlier one (a deleted row would restart the count and revive an old token)."""
    with write(engine) as conn:
        conn.execute(text("UPDATE daemon_lease SET expires_at = 0 "
                          "WHERE name = :n AND holder = :h AND token = :t"),
                     {"n": LEASE_NAME, "h": lease.holder, "t": lease.token})
