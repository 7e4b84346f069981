"""What the fakes' state modules (`fake_batches`, `fake_message_batches`) share: the batches
by id on a clock, and the two eventual-consistency switches both APIs have.

A batch's status is computed lazily from the clock whenever it is read, so every read goes
through the subclass's `refresh`."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class _Batch(Protocol):
    @property
    def created(self) -> float: ...

    @property
    def seq(self) -> int: ...


BatchT = TypeVar("BatchT", bound=_Batch)


class BatchStore(Generic[BatchT]):
    """The batches (`batches`, by id), the clock, the lock, the seeded random source, the
    log of executed requests and the switches `list_lag_seconds` and
    `batch_not_found_seconds` (read live on every request; on the clock; inf: forever)."""

    def __init__(self, *, clock: Callable[[], float], seed: int, list_lag_seconds: float,
                 batch_not_found_seconds: float) -> None:
        self.clock = clock
        self.list_lag_seconds = list_lag_seconds
        self.batch_not_found_seconds = batch_not_found_seconds
        self.random = random.Random(seed)
        self.lock = threading.RLock()
        self.batches: dict[str, BatchT] = {}
        #: `(batch id, custom_id, outcome)` of every request run so far.
        self.executions: list[tuple[str, str, str]] = []
        self._seq = itertools.count(1)

    def refresh(self, b: BatchT) -> None:
        """Bring the batch up to date with the clock."""
        raise NotImplementedError

    def _within(self, start: float, seconds: float) -> bool:
        """True while the clock is less than `seconds` (> 0; may be inf) past `start`."""
        return seconds > 0 and self.clock() < start + seconds

    def _lookup(self, batch_id: str, *, api: bool) -> BatchT | None:
        """The batch, brought up to date; None if there is none or, with `api`, while
        batch_not_found_seconds hides it. The caller raises its API's 404."""
        with self.lock:
            record = self.batches.get(batch_id)
            if record is None or (api and self._within(record.created,
                                                       self.batch_not_found_seconds)):
                return None
            self.refresh(record)
            return record

    def _newest_first(self) -> list[BatchT]:
        """The list answer, newest first, without batches younger than list_lag_seconds."""
        with self.lock:
            records = sorted((b for b in list(self.batches.values())
                              if not self._within(b.created, self.list_lag_seconds)),
                             key=lambda b: (b.created, b.seq), reverse=True)
            for record in records:
                self.refresh(record)
            return records
