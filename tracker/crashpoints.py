"""Test-only crash points: `TRACKER_CRASH_AT=<name>[:<n>]` SIGKILLs the process the n-th time
(default the first) it reaches the point `<name>`. Unset in real use: then this does nothing."""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()

POINTS = (
    "after_pack",  # the batch row and its items are committed, nothing uploaded
    "after_upload",  # the input file is uploaded and its id stored, no create sent
    "after_create",  # the create POST returned, its batch id not yet stored
    "mid_ingest",  # half the items updated inside the ingest transaction (rolled back)
    "after_ingest",  # the ingest transaction committed, before cleanup
)


def crash_point(name: str) -> None:
    spec = os.environ.get("TRACKER_CRASH_AT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _reached[name] += 1
    if _reached[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
