"""What every step needs: the database, the config, the clock and the providers."""

from __future__ import annotations

import functools
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine

from tracker.config import TrackerConfig
from tracker.errors import ClaimLost, LeaseLost
from tracker.models import Batch
from tracker.providers import registry
from tracker.providers.base import BaseBatchProvider
from tracker.states import BatchStatus
from tracker.store import batches, lease, provider_state, workers
from tracker.store.engine import read, write
from tracker.store.workers import WORKER_TTL, WorkerId

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
    #: At most this many batches are polled by one run of the poll step: their statuses come
    #: from one walk of the provider's list, so a cycle costs a call per page, not per batch.
    batches_per_poll: int = 1000
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    #: Built on first use from the config; tests may pre-fill it.
    providers: dict[str, BaseBatchProvider] = field(default_factory=dict)
    #: The daemon's fencing token; None when no daemon runs the steps (tests, one-off tools).
    lease_token: int | None = None
    #: This process as a worker that claims the batches it handles; None outside `tracker run`
    #: (then the steps take every due batch).
    worker: WorkerId | None = None
    worker_ttl: float = WORKER_TTL
    #: Read lease times from the database's clock (the daemon) rather than `now` (tests that
    #: drive a manual clock): workers on machines whose clocks differ still agree.
    lease_clock_from_database: bool = False
    #: Claim tokens of the batches this worker holds, from the last claim.
    _claims: dict[str, int] = field(default_factory=dict)
    #: Per thread (each step runs in its own): the batch whose part of a step is running; its
    #: claim is checked before each write.
    _handling: threading.local = field(default_factory=threading.local)
    _providers_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Batches to skip until a time, when even recording their failure failed (disk full).
    _held_back: dict[str, float] = field(default_factory=dict)
    #: The daemon's hand-off: run the named step now, not at its next tick. None when no
    #: daemon runs the steps (they then run in a fixed order).
    hand_off: Callable[[str], None] | None = None
    #: The daemon's metrics, when served: `(step, kind)` of each failure a step meets, and
    #: `(provider, endpoint, outcome)` of each HTTP call to a provider.
    count_error: Callable[[str, str], None] | None = None
    count_call: Callable[[str, str, str], None] | None = None

    def report_to(self, count_error: Callable[[str, str], None],
                  count_call: Callable[[str, str, str], None]) -> None:
        """Send step failures and provider calls to the metrics from now on (providers
        built already included)."""
        self.count_error, self.count_call = count_error, count_call
        with self._providers_lock:
            for name, provider in self.providers.items():
                provider.call_observer = functools.partial(count_call, name)

    def note_error(self, kind: str, step: str | None = None) -> None:
        """A step met a failure of `kind` (by default the step running in this thread)."""
        if self.count_error is not None:
            self.count_error(step or getattr(self._handling, "step", None) or "-", kind)

    def hand_off_to(self, step: str) -> None:
        """Work is ready for `step` (a batch packed, created or ended)."""
        if self.hand_off is not None:
            self.hand_off(step)

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
            self._held_back.pop(batch_id, None)
            return False
        return True

    def claim_due(self, statuses: frozenset[BatchStatus], order: str, *,
                  limit: int | None = None) -> list[Batch]:
        """This worker's due batches in `statuses`, claimed first; every due batch when no
        worker runs the steps. At most `limit` (default `batches_per_step`), skipping
        held-back ones."""
        wanted = limit if limit is not None else self.batches_per_step
        limit = wanted + self.held_back_count
        if self.worker is None:
            rows = batches.due(self.engine, statuses, order, self.now(), limit)
        else:
            rows = workers.claim_due(
                self.engine, self.worker, statuses, order, self.now(), limit, self.worker_ttl,
                lease_now=None if self.lease_clock_from_database else self.now())
            self._claims.update({row.id: row.claim_token for row in rows})
        return [row for row in rows if not self.held_back(row.id)][:wanted]

    @contextmanager
    def handling(self, batch_id: str, step: str | None = None) -> Iterator[None]:
        """Writes and provider calls inside this block are about `batch_id`: each first checks
        that this worker still holds its claim. `step`: the step doing it (for metrics)."""
        self._handling.batch_id = batch_id
        self._handling.step = step
        try:
            yield
        finally:
            self._handling.batch_id = None
            self._handling.step = None

    def _check_fence(self, conn: Connection, *, lock: bool) -> None:
        """`LeaseLost` if this daemon lost its lease or worker row (it must stop);
        `ClaimLost` if another worker took the current batch over (leave it alone). With
        `lock` (a write), what was checked stays so until the transaction ends."""
        if self.lease_token is not None and not lease.holds(conn, self.lease_token):
            raise LeaseLost()
        if self.worker is None:
            return
        if not workers.registered(conn, self.worker, lock=lock):
            raise LeaseLost()
        batch_id: str | None = getattr(self._handling, "batch_id", None)
        if batch_id is not None and not self.holds_claim(conn, batch_id, lock=lock):
            raise ClaimLost(f"another worker took batch {batch_id} over")

    def holds_claim(self, conn: Connection, batch_id: str, *, lock: bool = True) -> bool:
        """Whether this worker still holds its claim on `batch_id` (true when it runs no
        worker or never claimed it). With `lock` (inside a write, e.g. one about several
        batches) the batch stays so until the transaction ends."""
        if self.worker is None or batch_id not in self._claims:
            return True
        return workers.claim_held(conn, self.worker, batch_id, self._claims[batch_id],
                                  lock=lock)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction that first checks, inside it, that this daemon still holds its
        lease and its claim on the current batch: a worker paused past them writes nothing."""
        with write(self.engine) as conn:
            self._check_fence(conn, lock=True)
            yield conn

    def check_lease(self) -> None:
        """Raise `LeaseLost` or `ClaimLost` before a provider call this worker may no longer
        make."""
        if self.lease_token is None and self.worker is None:
            return
        with read(self.engine) as conn:
            self._check_fence(conn, lock=False)

    def provider_for_call(self, name: str) -> BaseBatchProvider:
        """The provider, once the lease is checked: use it right before a call."""
        self.check_lease()
        return self.provider(name)

    def not_found_grace(self, provider: str) -> float:
        return self.config.provider(provider).not_found_grace

    def list_lag_grace(self, provider: str) -> float:
        return self.config.provider(provider).list_lag_grace

    def provider(self, name: str) -> BaseBatchProvider:
        with self._providers_lock:  # the steps' threads share one client per provider
            if name not in self.providers:
                options = self.config.provider(name).client_options()
                self.providers[name] = registry.create_provider(self.config.kind_of(name),
                                                                options)
                if self.count_call is not None:
                    self.providers[name].call_observer = functools.partial(
                        self.count_call, name)
            return self.providers[name]

    def _described_by(self, provider: str) -> BaseBatchProvider | type[BaseBatchProvider]:
        """What knows the provider's limits and endpoints: the provider object when one is
        built (an instance may lower its limits), else its class (packing needs no
        credentials)."""
        return self.providers.get(provider) or registry.provider_class(
            self.config.kind_of(provider))

    def batch_limits(self, provider: str) -> tuple[int, int]:
        """`(max lines, max bytes)` of one provider batch."""
        source = self._described_by(provider)
        return source.max_lines_per_batch, source.max_bytes_per_batch

    def batches_per_hour(self, provider: str) -> int | None:
        """How many batches the provider lets one account create per hour, if it limits it."""
        return self._described_by(provider).max_batches_per_hour

    def endpoint(self, provider: str, model: str) -> str:
        """Where `model`'s requests go, by its mode."""
        return self._described_by(provider).endpoint_for(self.mode(provider, model))

    def deletes_files(self, provider: str) -> bool:
        """Whether `provider`'s batch files are deleted once a batch is ingested. A provider
        no longer in the config keeps its files (nothing here says otherwise)."""
        section = self.config.providers.get(provider)
        return section is not None and section.delete_files == "after_ingest"

    def max_attempts(self, provider: str) -> int:
        return self.config.provider(provider).max_attempts

    def mode(self, provider: str, model: str) -> str:
        configured = self.config.provider(provider).model(model)
        return configured.mode if configured is not None else "chat"

    # -- provider pause (bad key, no quota): stop submitting, keep polling ------------------

    def paused_reason(self, provider: str) -> str | None:
        """The reason submissions to `provider` are paused, unless its probe time has come."""
        with read(self.engine) as conn:
            pause = provider_state.pause_of(conn, provider)
        if pause is None:
            return None
        if pause.next_probe_at is not None and pause.next_probe_at <= self.now():
            return None
        return pause.reason

    def pause_provider(self, provider: str, reason: str, probe_in: float) -> None:
        now = self.now()
        with self.write() as conn:
            provider_state.pause(conn, provider, reason, now, now + probe_in)
        log.error("provider %s: submissions paused: %s (next probe in %.0fs)",
                  provider, reason, probe_in)

    def resume_provider(self, provider: str) -> None:
        with self.write() as conn:
            resumed = provider_state.resume(conn, provider, self.now())
        if resumed:
            log.info("provider %s: submissions resumed", provider)
