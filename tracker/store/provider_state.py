"""Statements on `provider_state`: a provider whose submissions are paused (bad key, no
quota), and when to probe it again."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class Pause:
    reason: str
    next_probe_at: float | None


def pause_of(conn: Connection, provider: str) -> Pause | None:
    row = conn.execute(text("SELECT paused_reason, next_probe_at FROM provider_state "
                            "WHERE provider = :p"), {"p": provider}).one_or_none()
    if row is None or row.paused_reason is None:
        return None
    return Pause(row.paused_reason, row.next_probe_at)


def pause(conn: Connection, provider: str, reason: str, now: float, probe_at: float) -> None:
    conn.execute(
        text("INSERT INTO provider_state (provider, paused_reason, paused_at, next_probe_at, "
             "updated_at) VALUES (:p, :r, :now, :probe, :now) "
             "ON CONFLICT (provider) DO UPDATE SET paused_reason = :r, "
             "paused_at = COALESCE(provider_state.paused_at, :now), "
             "next_probe_at = :probe, updated_at = :now"),
        {"p": provider, "r": reason, "now": now, "probe": probe_at})


def resume(conn: Connection, provider: str, now: float) -> bool:
    """Lift the pause; False if there was none."""
    return conn.execute(
        text("UPDATE provider_state SET paused_reason = NULL, paused_at = NULL, "
             "next_probe_at = NULL, updated_at = :now "
             "WHERE provider = :p AND paused_reason IS NOT NULL"),
        {"p": provider, "now": now}).rowcount > 0

