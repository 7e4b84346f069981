"""Test-only crash points: `TRACKER_CRASH_AT=<name>[:<n>]` SIGKILLs the process the n-th time
(default the first) it reaches the point `<name>`; `TRACKER_PAUSE_AT=<name>[:<n>]` stops it
there with SIGSTOP instead (a paused daemon: SIGCONT resumes it). Unset in real use: then this
does nothing."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

_reached: Counter[tuple[str, str]] = Counter()

#: While a pause point waits for other threads' transactions to end, and while the process is
#: stopped there, no other thread starts one: SIGSTOP never freezes the process inside another
#: step's or the heartbeat's transaction (SQLite would stay locked for the daemon that takes
#: over, which is not what these tests are about).
_gate = threading.Condition()
_writing: Counter[int] = Counter()
_pausing: int | None = None


@contextmanager
def writing() -> Iterator[None]:
    """Wrap each write transaction: a pause point waits for it to end. Free unless a pause
    point is set (tests)."""
    if not os.environ.get("TRACKER_PAUSE_AT"):
        yield
        return
    me = threading.get_ident()
    with _gate:
        _gate.wait_for(lambda: _pausing in (None, me))
        _writing[me] += 1
    try:
        yield
    finally:
        with _gate:
            _writing[me] -= 1
            _gate.notify_all()


def _pause_here() -> None:
    """Stop the process once no other thread is inside a write transaction (every point is
    outside its own thread's transactions)."""
    global _pausing
    me = threading.get_ident()
    with _gate:
        _gate.wait_for(lambda: _pausing is None)
        _pausing = me
        _gate.wait_for(lambda: all(n == 0 for t, n in _writing.items() if t != me))
    try:
        # To this thread: a process-wide kill() may be taken by another thread, and this one
        # would run on (into its next transaction) until the stop lands.
        signal.pthread_kill(me, signal.SIGSTOP)
    finally:
        with _gate:
            _pausing = None
            _gate.notify_all()

POINTS = (
    "after_pack",  # the batch row and its items are committed, nothing uploaded
    "after_upload",  # the input file is uploaded and its id stored, no create sent
    "before_create",  # the create intent is committed, the create not yet sent
    "before_create_call",  # the lease was checked just now; the create is sent next
    "after_create",  # the create POST returned, its batch id not yet stored
    "before_ingest_write",  # results downloaded and verified, nothing written yet
    "mid_ingest",  # half the items stored (committed), the batch not yet closed
    "after_ingest",  # the last ingest transaction (closing the batch) committed, before cleanup
)


def crash_point(name: str) -> None:
    for variable, sig in (("TRACKER_CRASH_AT", signal.SIGKILL),
                          ("TRACKER_PAUSE_AT", signal.SIGSTOP)):
        spec = os.environ.get(variable)
        if not spec:
            continue
        target, _, count = spec.partition(":")
        if target != name:
            continue
        _reached[variable, name] += 1
        if sig == signal.SIGSTOP and _reached[variable, name] == int(count or 1):
            _pause_here()
        elif sig == signal.SIGKILL and _reached[variable, name] >= int(count or 1):
            os.kill(os.getpid(), sig)
