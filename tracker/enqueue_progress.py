"""The progress bar of `tracker enqueue` on a terminal.

The input stream is wrapped, not the enqueue: a raw reader counts the bytes and line ends that
pass through it and a `BufferedReader` on top gives `enqueue_stream` the `readline` it uses,
so the count costs one call per 64 KiB, not one per line. The bar is drawn on stderr only
when stderr is a terminal, and is erased when the enqueue ends, so the last line is the
outcome (or the error).
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: Files smaller than this are read too fast for a bar to help.
LARGE_INPUT_BYTES = 1024 * 1024
READ_SIZE = 64 * 1024


class CountingReader(io.RawIOBase):
    """Reads `inner`, reporting the bytes and line ends read so far to `on_read`."""

    def __init__(self, inner: IO[bytes], on_read: Callable[[int, int], None]) -> None:
        super().__init__()
        self._inner = inner
        # one read of what is there, so a slow pipe shows progress as it comes
        self._read: Callable[[int], bytes] = getattr(inner, "read1", inner.read)
        self._on_read = on_read
        self.bytes_read = 0
        self.lines_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read(len(view))
        view[:len(data)] = data
        self.bytes_read += len(data)
        self.lines_read += data.count(b"\n")
        self._on_read(self.bytes_read, self.lines_read)
        return len(data)


def input_size(stream: IO[bytes]) -> int | None:
    """The size of a regular file (also one redirected to stdin); None for a pipe or a tty."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


@contextmanager
def progress_on_terminal(stream: IO[bytes], name: str) -> Iterator[IO[bytes]]:
    """`stream`, counted on a bar on stderr (a spinner when its size is unknown) when stderr is
    a terminal and the input is large or of unknown size; otherwise `stream` itself."""
    size = input_size(stream)
    if not sys.stderr.isatty() or (size is not None and size < LARGE_INPUT_BYTES):
        yield stream
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    lines = TextColumn("{task.fields[lines]:,} lines")
    columns: tuple[ProgressColumn, ...] = (
        (TextColumn("{task.description}"), BarColumn(bar_width=30), DownloadColumn(), lines,
         TransferSpeedColumn(), TimeRemainingColumn())
        if size is not None else
        (SpinnerColumn(), TextColumn("{task.description}"), DownloadColumn(), lines,
         TransferSpeedColumn(), TimeElapsedColumn()))
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"reading {Path(name).name}", total=size, lines=0)

        def on_read(bytes_read: int, lines_read: int) -> None:
            progress.update(task, completed=bytes_read, lines=lines_read)

        yield io.BufferedReader(CountingReader(stream, on_read), buffer_size=READ_SIZE)
