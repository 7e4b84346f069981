"""What several steps share: keeping a provider snapshot on the batch row, and the provider
status the tracker writes itself for a batch that vanished."""

from __future__ import annotations

from sqlalchemy import Connection

from tracker.context import Context
from tracker.errors import StaleBatch
from tracker.models import Batch
from tracker.providers.base import ProviderBatch
from tracker.retry import poll_delay
from tracker.store import batches

#: `provider_status` of a batch that answered 404 past the grace period.
VANISHED = "vanished"


def provider_batch_id(batch: Batch) -> str:
    """The provider's id of a batch that reached the provider (every running or duplicate
    row has one; a row without is stale and left alone)."""
    if batch.provider_batch_id is None:
        raise StaleBatch(f"batch {batch.id} has no provider batch id")
    return batch.provider_batch_id


def store_status(conn: Connection, batch_id: str, status: ProviderBatch, now: float,
                 poll_interval: float) -> None:
    """Keep what the provider said about the batch, and poll it again after a delay that
    grows with the batch's age."""
    age = now - batches.created_at(conn, batch_id)
    batches.record_provider_status(conn, batch_id, status, now + poll_delay(poll_interval, age),
                                   now)


#: Provider batches are searched from this long before the provider's time of the row's first
#: create (its input file's upload, or its clock read before the create): skew between the
#: provider's own servers.
PROVIDER_CLOCK_SLACK = 300
#: Without a provider timestamp (rows from before it was stored), search back this far.
FALLBACK_SEARCH_WINDOW = 86400


def provider_time_floor(batch: Batch) -> int | None:
    """The provider's time before the row's first create, if known: its input file's creation,
    else the clock read before the create (providers that take requests inline)."""
    if batch.input_file_created_at is not None:
        return int(batch.input_file_created_at)
    if batch.provider_time_at_intent is not None:
        return int(batch.provider_time_at_intent)
    return None


def search_from(batch: Batch) -> int:
    """The provider time from which a batch of this local row may have been created."""
    floor = provider_time_floor(batch)
    if floor is not None:
        return floor - PROVIDER_CLOCK_SLACK
    anchor = batch.create_attempted_at or batch.created_at
    return int(anchor) - FALLBACK_SEARCH_WINDOW


#: After a create whose answer may have been lost, the provider's list is watched this long
#: (at least) for a twin: at every poll of an open batch, and before a row that never got a
#: provider batch is closed.
MIN_SWEEP_WINDOW = 600.0


def sweep_window(ctx: Context, batch: Batch) -> float:
    """How long after its last create attempt a lagging list may still show a new batch."""
    return max(MIN_SWEEP_WINDOW, 10 * ctx.list_lag_grace(batch.provider))
