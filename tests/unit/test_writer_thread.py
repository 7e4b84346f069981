"""`WriterThread`: chunks written in order in a thread of their own, and whose error wins."""

from __future__ import annotations

import threading

import pytest

from tracker.writer_thread import WriterThread


class Boom(Exception):
    pass


@pytest.mark.parametrize("threaded", [True, False])
def test_chunks_are_written_in_order_in_the_writer_thread(threaded: bool) -> None:
    threads: set[str] = set()

    def write(chunk: list[int]) -> int:
        threads.add(threading.current_thread().name)
        return sum(chunk)

    writer: WriterThread[list[int], int]
    with WriterThread(write, threaded=threaded) as writer:
        for start in range(0, 100, 10):
            writer.submit(list(range(start, start + 10)))
    assert writer.results() == [sum(range(s, s + 10)) for s in range(0, 100, 10)]
    assert threads == ({"tracker-writer"} if threaded else {threading.current_thread().name})


@pytest.mark.parametrize("threaded", [True, False])
def test_the_first_write_error_stops_the_writes_and_is_raised(threaded: bool) -> None:
    written: list[int] = []

    def write(chunk: int) -> int:
        if chunk == 2:
            raise Boom(f"chunk {chunk}")
        written.append(chunk)
        return chunk

    with pytest.raises(Boom, match="chunk 2"), WriterThread(write, threaded=threaded) as writer:
        for chunk in range(6):
            writer.submit(chunk)
    assert written == [0, 1]


def test_an_earlier_chunks_error_wins_over_the_callers() -> None:
    failed = threading.Event()

    def write(chunk: int) -> int:
        failed.set()
        raise Boom(f"chunk {chunk}")

    with pytest.raises(Boom, match="chunk 0"), WriterThread(write, threaded=True) as writer:
        writer.submit(0)
        assert failed.wait(10)
        raise ValueError("a later line is bad")
