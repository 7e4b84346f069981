"""Reconcile at a provider whose batches carry no metadata (Anthropic): which provider batches
may a create whose answer was lost have made?

Nothing on a provider batch names the local row, so a candidate is a batch the provider's list
shows that

- was created at or after the provider's clock read just before the row's first create (less
  the skew between the provider's servers),
- holds as many requests as the row has items, and
- no local row has recorded (as its batch or as a duplicate).

A candidate no other row could have made is this row's, as a batch found by its metadata would
be. Another row could have made it when, in the last sweep window, that row sent a create of
the same size whose answer was lost (or is being sent now), or sent one more than once (a
twin), whatever its status now. Such a candidate is told apart by its results once it ends:
it is this row's when every custom id in it is one of this row's. Until then it is undecided:
no second create is sent while one is, and it is not cancelled (it may be the other row's), so
a twin that overlaps another row's lost create runs to its end and is recorded as waste.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracker.context import Context, log
from tracker.models import Batch
from tracker.providers.base import BaseBatchProvider, ProviderBatch
from tracker.steps.common import search_from, sweep_window
from tracker.store import batches, items
from tracker.store.engine import read


@dataclass(frozen=True)
class Candidates:
    """What the provider's list shows for one row."""

    #: Provider batches that are this row's (adopt one, the others are duplicates).
    ours: list[ProviderBatch] = field(default_factory=list)
    #: Batches that may be this row's or another unanswered row's, still running.
    undecided: list[ProviderBatch] = field(default_factory=list)


def find_by_count(ctx: Context, batch: Batch, provider: BaseBatchProvider,
                  created_after: int) -> Candidates:
    listed = _listed_since(provider, created_after)
    sizes = {size for size in (batch.item_count, batch.sent_request_count) if size}
    with read(ctx.engine) as conn:
        claimed = batches.claimed_provider_ids(conn, batch.provider,
                                               (s.provider_batch_id for s in listed))
        rivals = batches.may_own_unrecorded(conn, batch.provider, sizes, batch.id,
                                            ctx.now() - sweep_window(ctx, batch))
    candidates = [s for s in listed if s.provider_batch_id not in claimed
                  and s.request_counts.total in sizes]
    ours: list[ProviderBatch] = []
    undecided: list[ProviderBatch] = []
    for candidate in candidates:
        if not any(_could_be_of(rival, candidate) for rival in rivals):
            ours.append(candidate)
        elif not candidate.is_terminal:
            undecided.append(candidate)
        elif _results_are_of(ctx, batch, provider, candidate):
            ours.append(candidate)
    if undecided:
        log.warning("batch %s: %d provider batch(es) of its size may be its own or another "
                    "unanswered row's; they are told apart by their results when they end",
                    batch.id, len(undecided))
    return Candidates(ours=ours, undecided=undecided)


def _listed_since(provider: BaseBatchProvider, created_after: int) -> list[ProviderBatch]:
    """The provider's batches created at or after `created_after`, newest first."""
    found: list[ProviderBatch] = []
    for status in provider.list_batches():
        if status.created_at is not None and status.created_at < created_after:
            break
        found.append(status)
    return found


def _could_be_of(rival: Batch, candidate: ProviderBatch) -> bool:
    return candidate.created_at is None or candidate.created_at >= search_from(rival)


def _results_are_of(ctx: Context, batch: Batch, provider: BaseBatchProvider,
                    candidate: ProviderBatch) -> bool:
    """Whether the ended candidate ran this row's requests: each of its custom ids is one
    this row's items are sent under (and it has at least one)."""
    with read(ctx.engine) as conn:
        ours = {provider.wire_custom_id(item_id)
                for item_id in items.attempts_used(conn, batch.id)}
    with provider.fetch_results(candidate.provider_batch_id) as results:
        seen = {row.custom_id for row in results}
    return bool(seen) and seen <= ours
