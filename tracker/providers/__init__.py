"""Batch API providers behind one interface; `registry.create_provider(name, config)`."""

from tracker.providers import registry
from tracker.providers.base import (
    BaseBatchProvider,
    BatchError,
    BatchStatus,
    FetchedResults,
    NormalizedStatus,
    PermanentProviderError,
    PreparedBatch,
    ProviderError,
    ProviderResultRow,
    RequestCounts,
    SubmitResult,
    TransientProviderError,
)

__all__ = [
    "BaseBatchProvider",
    "BatchError",
    "BatchStatus",
    "FetchedResults",
    "NormalizedStatus",
    "PermanentProviderError",
    "PreparedBatch",
    "ProviderError",
    "ProviderResultRow",
    "RequestCounts",
    "SubmitResult",
    "TransientProviderError",
    "registry",
]
