"""Test-only crash points: `TRACKER_CRASH_AT=<name>[:<n>]` SIGKILLs the process the n-th time
(default the first) it reaches the point `<name>`; `TRACKER_PAUSE_AT=<name>[:<n>]` stops it
there with SIGSTOP instead (a paused daemon: SIGCONT resumes it). Unset in real use: then this
does nothing."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

_reached: Counter[tuple[str, str]] = Counter()

#: Held by the daemon's other threads (the lease heartbeat) while they write: a pause point
#: waits for it, so SIGSTOP never freezes the process inside their transaction (SQLite would
#: stay locked for the daemon that takes over, which is not what these tests are about).
other_thread_writing = threading.Lock()

POINTS = (
    "after_pack",  # the batch row and its items are committed, nothing uploaded
    "after_upload",  # the input file is uploaded and its id stored, no create sent
    "before_create",  # the create intent is committed, the create not yet sent
    "before_create_call",  # the lease was checked just now; the create is sent next
    "after_create",  # the create POST returned, its batch id not yet stored
    "before_ingest_write",  # results downloaded and verified, nothing written yet
    "mid_ingest",  # half the items updated inside the ingest transaction (rolled back)
    "after_ingest",  # the ingest transaction committed, before cleanup
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
            with other_thread_writing:
                # To this thread: a process-wide kill() may be taken by another thread, and
                # this one would run on (into its next transaction) until the stop lands.
                signal.pthread_kill(threading.get_ident(), sig)
        elif sig == signal.SIGKILL and _reached[variable, name] >= int(count or 1):
            os.kill(os.getpid(), sig)
