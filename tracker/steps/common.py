"""What several steps share: keeping a provider snapshot on the batch row, and the provider
status the tracker writes itself for a batch that vanished."""

from __future__ import annotations

from sqlalchemy import Connection

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
