"""Item outcomes regrouped into runs of neighbouring item ids before they are written.

A provider's result file follows no order. Written in the file's order, every transaction of
an ingest touches rows all over the items table, and the next one touches the same pages
again; regrouped by each item's rank in the batch (its place in id order), one transaction
writes one stretch of the table, once. The runs wait on disk, pickled in slices, in unnamed
temporary files (gone when closed, or when the process dies), so memory holds at most one
run's values: flat in the size of the batch.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Generic, TypeVar

T = TypeVar("T")


class OutcomeSpool(Generic[T]):
    """Values keyed by item id, handed back run by run: run k holds the items of ranks
    `k * run_size` to `(k + 1) * run_size - 1`, in the order they were added."""

    def __init__(self, directory: Path, ranks: Mapping[str, int], run_size: int) -> None:
        self._directory = directory
        self._ranks = ranks
        self._run_size = max(run_size, 1)
        self._runs = -(-len(ranks) // self._run_size)
        self._held: list[list[T]] = [[] for _ in range(self._runs)]
        self._files: dict[int, IO[bytes]] = {}
        self._count = 0

    def add(self, item_id: str, value: T) -> None:
        self._held[self._ranks[item_id] // self._run_size].append(value)
        self._count += 1
        if self._count % self._run_size == 0:
            self._spill()

    def runs(self) -> Iterator[list[T]]:
        """Each run's values (an empty run is skipped); its file is closed (and so gone) once
        read."""
        for run, held in enumerate(self._held):
            values: list[T] = []
            spilled = self._files.pop(run, None)
            if spilled is not None:
                spilled.seek(0)
                while True:
                    try:
                        values.extend(pickle.load(spilled))
                    except EOFError:
                        break
                spilled.close()
            values.extend(held)
            self._held[run] = []
            if values:
                yield values

    def close(self) -> None:
        for spilled in self._files.values():
            spilled.close()
        self._files.clear()

    def _spill(self) -> None:
        for run, held in enumerate(self._held):
            if not held:
                continue
            spilled = self._files.get(run)
            if spilled is None:
                # Unnamed, so no other process (a worker that took the batch over) shares it;
                # open across calls, closed by `runs` or `close`.
                self._directory.mkdir(parents=True, exist_ok=True)
                spilled = self._files[run] = tempfile.TemporaryFile(  # noqa: SIM115
                    dir=self._directory)
            pickle.dump(held, spilled, protocol=pickle.HIGHEST_PROTOCOL)
            self._held[run] = []
