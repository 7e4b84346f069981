"""Hand chunks to a thread that writes them, in order, while the caller prepares the next.

`tracker enqueue` on PostgreSQL waits for the server at the end of each chunk's `COPY` for
about as long as it takes to parse the chunk; with the writes in a thread of their own, the
server (another process) works while Python parses. One chunk waits at most, so memory stays
at three chunks (one being written, one waiting, one being read).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

Chunk = TypeVar("Chunk")
Result = TypeVar("Result")

_END = object()


class WriterThread(Generic[Chunk, Result]):
    """`with WriterThread(write, threaded) as writer: writer.submit(chunk)`; `results()` after
    the block. With `threaded` False the chunks are written inline (same order and errors).

    The first error of `write` stops the writing (later chunks are dropped) and is raised by
    the next `submit` or at the end of the block, in place of an error the caller raised
    meanwhile: the writer's chunk came from earlier input than what the caller was reading.
    The block ends only once the thread has stopped, so the caller's transaction is never
    touched by two threads."""

    def __init__(self, write: Callable[[Chunk], Result], threaded: bool) -> None:
        self._write = write
        self._threaded = threaded
        self._results: list[Result] = []
        self._error: BaseException | None = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._drain, name="tracker-writer", daemon=True)

    def __enter__(self) -> WriterThread[Chunk, Result]:
        if self._threaded:
            self._thread.start()
        return self

    def submit(self, chunk: Chunk) -> None:
        self._raise_error()
        if self._threaded:
            self._queue.put(chunk)
        else:
            self._results.append(self._write(chunk))

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not _END:
            if self._error is None:
                try:
                    self._results.append(self._write(chunk))  # type: ignore[arg-type]
                except BaseException as exc:
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._threaded:
            self._queue.put(_END)
            self._thread.join()
        self._raise_error()

    def results(self) -> list[Result]:
        return self._results
