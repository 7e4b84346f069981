"""What every step needs: the database, the config, the clock and the providers."""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from tracker import lease
from tracker.config import TrackerConfig
from tracker.db import read, write
from tracker.errors import LeaseLost
from tracker.providers import registry
from tracker.providers.base import BaseBatchProvider

log = logging.getLogger("tracker")


def new_batch_id() -> str:
    """A local batch id, unique across databases (it is matched in provider metadata)."""
    return f"tb_{uuid.uuid4().hex[:20]}"


@dataclass
class Context:
    engine: Engine
    config: TrackerConfig
    now: Callable[[], float] = time.time
    poll_interval: float = 30.0
    #: At most this many batches are handled by one run of a step, so a stop is prompt.
    batches_per_step: int = 20
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    #: Built on first use from the config; tests may pre-fill it.
    providers: dict[str, BaseBatchProvider] = field(default_factory=dict)
    #: The daemon's fencing token; None when no daemon runs the steps (tests, one-off tools).
    lease_token: int | None = None
    #: Batches to skip until a time, when even recording their failure failed (disk full).
    _held_back: dict[str, float] = field(default_factory=dict)

    def hold_back(self, batch_id: str, seconds: float) -> None:
        self._held_back[batch_id] = self.now() + seconds

    @property
    def held_back_count(self) -> int:
        return len(self._held_back)

    def held_back(self, batch_id: str) -> bool:
        until = self._held_back.get(batch_id)
        if until is None:
            return False
        if until <= self.now():
            del self._held_back[batch_id]
            return False
        return True

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction that first checks, inside it, that this daemon still holds the
        lease (`LeaseLost` otherwise): a daemon paused past its lease writes nothing."""
        with write(self.engine) as conn:
            if self.lease_token is not None and not lease.holds(conn, self.lease_token):
                raise LeaseLost()
            yield conn

    def check_lease(self) -> None:
        """Raise `LeaseLost` before a provider call this daemon may no longer make."""
        if self.lease_token is None:
            return
        with read(self.engine) as conn:
            if not lease.holds(conn, self.lease_token):
                raise LeaseLost()

    def provider_for_call(self, name: str) -> BaseBatchProvider:
        """The provider, once the lease is checked: use it right before a call."""
        self.check_lease()
        return self.provider(name)

    def not_found_grace(self, provider: str) -> float:
        return self.config.provider(provider).not_found_grace

    def list_lag_grace(self, provider: str) -> float:
        return self.config.provider(provider).list_lag_grace

    def provider(self, name: str) -> BaseBatchProvider:
        if name not in self.providers:
            options = self.config.provider(name).client_options()
            self.providers[name] = registry.create_provider(name, options)
        return self.providers[name]

    def batch_limits(self, provider: str) -> tuple[int, int]:
        """`(max lines, max bytes)` of one provider batch: the provider object's, when one is
        built, else its class's (packing needs no credentials)."""
        source = self.providers.get(provider) or registry.provider_class(provider)
        return source.max_lines_per_batch, source.max_bytes_per_batch

    def endpoint(self, provider: str, model: str) -> str:
        from tracker.providers.openai import ENDPOINTS

        return ENDPOINTS.get(self.mode(provider, model), "/v1/chat/completions")

    def max_attempts(self, provider: str) -> int:
        return self.config.provider(provider).max_attempts

    def mode(self, provider: str, model: str) -> str:
        configured = self.config.provider(provider).model(model)
        return configured.mode if configured is not None else "chat"

    # -- provider pause (bad key, no quota): stop submitting, keep polling ------------------

    def paused_reason(self, provider: str) -> str | None:
        """The reason submissions to `provider` are paused, unless its probe time has come."""
        with read(self.engine) as conn:
            row = conn.execute(
                text("SELECT paused_reason, next_probe_at FROM provider_state "
                     "WHERE provider = :p"),
                {"p": provider},
            ).one_or_none()
        if row is None or row.paused_reason is None:
            return None
        if row.next_probe_at is not None and row.next_probe_at <= self.now():
            return None
        return row.paused_reason

    def pause_provider(self, provider: str, reason: str, probe_in: float) -> None:
        now = self.now()
        with self.write() as conn:
            conn.execute(
                text(
                    "INSERT INTO provider_state (provider, paused_reason, paused_at, "
                    "next_probe_at, updated_at) VALUES (:p, :r, :now, :probe, :now) "
                    "ON CONFLICT (provider) DO UPDATE SET paused_reason = :r, "
                    "paused_at = COALESCE(provider_state.paused_at, :now), "
                    "next_probe_at = :probe, updated_at = :now"
                ),
                {"p": provider, "r": reason, "now": now, "probe": now + probe_in},
            )
        log.error("provider %s: submissions paused: %s (next probe in %.0fs)",
                  provider, reason, probe_in)

    def resume_provider(self, provider: str) -> None:
        with self.write() as conn:
            resumed = conn.execute(
                text("UPDATE provider_state SET paused_reason = NULL, paused_at = NULL, "
                     "next_probe_at = NULL, updated_at = :now "
                     "WHERE provider = :p AND paused_reason IS NOT NULL"),
                {"p": provider, "now": self.now()},
            ).rowcount
        if resumed:
            log.info("provider %s: submissions resumed", provider)
