"""Batch API providers behind one interface; `registry.create_provider(name, config)`."""

from tracker.providers import registry
from tracker.providers.base import (
    BaseBatchProvider,
    BatchError,
    FetchedResults,
    NormalizedStatus,
    PermanentProviderError,
    PreparedBatch,
    ProviderBatch,
    ProviderError,
    ProviderResultRow,
    RequestCounts,
    SubmitResult,
    TransientProviderError,
)

__all__ = [
    "BaseBatchProvider",
    "BatchError",
    "ProviderBatch",
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
