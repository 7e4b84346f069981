"""The tracker's own exceptions; the docstring is the default message."""

from __future__ import annotations


class TrackerError(Exception):
    """tracker error"""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(TrackerError):
    """invalid configuration"""


class InputError(TrackerError):
    """invalid input"""


class UnknownProvider(TrackerError):
    """unknown provider"""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown provider {name!r}; known providers: {', '.join(known) or '(none)'}"
        )
        self.name = name
        self.known = known


class IllegalTransition(TrackerError):
    """illegal status transition"""

    def __init__(self, entity: str, entity_id: str, frm: str | None, to: str) -> None:
        super().__init__(f"illegal {entity} transition {frm} -> {to} for {entity_id}")
        self.entity, self.entity_id, self.frm, self.to = entity, entity_id, frm, to


class StaleTransition(TrackerError):
    """the row changed under us"""

    def __init__(self, entity: str, entity_id: str, frm: str, to: str) -> None:
        super().__init__(
            f"{entity} {entity_id} is no longer {frm}; someone else moved it (wanted {to})"
        )
        self.entity, self.entity_id, self.frm, self.to = entity, entity_id, frm, to


class DatabaseError(TrackerError):
    """database problem"""


class LeaseHeld(TrackerError):
    """another daemon holds the lease on this database"""


class LeaseLost(TrackerError):
    """this daemon no longer holds the lease (another took it over); it must stop"""


class StaleBatch(TrackerError):
    """the batch changed under us (another daemon, or a repeated step); nothing was sent"""


class ClaimLost(StaleBatch):
    """another worker claimed the batch (this one was paused past its claim); nothing written"""
