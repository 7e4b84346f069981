"""The daemon's steps: pack, submit (with reconcile), poll, ingest.

Each step is idempotent and safe to re-run after a crash at any line: it commits its intent,
makes the network call with no transaction open, then commits the outcome. A failure while
handling one batch is recorded on that batch and the step goes on with the next.
"""

from tracker.steps.ingest import ingest
from tracker.steps.pack import pack
from tracker.steps.poll import poll
from tracker.steps.submit import submit

__all__ = ["ingest", "pack", "poll", "submit"]
