"""A persistent, crash-safe job tracker for LLM batch APIs.

`from tracker import Tracker` is the Python API (`tracker.api`); it is loaded on first use,
so `import tracker` alone, which every `tracker` command does first, stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.api import CancelResult, Result, Tracker

__all__ = ["CancelResult", "Result", "Tracker"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tracker import api

        return getattr(api, name)
    raise AttributeError(f"module 'tracker' has no attribute {name!r}")
