"""What the providers' error classifiers share: the retry hint of an answer's headers, and
the class an HTTP status makes an error."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from types import ModuleType

import httpx2

from tracker.providers.base import PermanentProviderError, ProviderError, TransientProviderError
from tracker.redact import redact_secrets

#: A 429 that gives no hint waits this long (the seed's rule).
RATE_LIMIT_DEFAULT_RETRY_AFTER = 60.0
#: A hint longer than a day is treated as a day (`inf` and overflowing values included).
MAX_RETRY_AFTER = 86400.0


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait from `retry-after-ms`, then `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if seconds == seconds and seconds >= 0:  # not NaN
            return min(seconds, MAX_RETRY_AFTER)
    value = headers.get("retry-after")
    if value:
        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            current = time.time() if now is None else now
            return max(0.0, email.utils.mktime_tz(parsed) - current)
    return None


def by_status(status: int, text: str, *, code: str | None, retry_after: float | None,
              rate_limit_code: str) -> ProviderError:
    """Transient: 429 (waits `RATE_LIMIT_DEFAULT_RETRY_AFTER` without a hint), 408, 409 and
    5xx; permanent: every other status (400, 401, 403, 404, ...)."""
    if status == 429:
        return TransientProviderError(
            text,
            retry_after=RATE_LIMIT_DEFAULT_RETRY_AFTER if retry_after is None else retry_after,
            status_code=status, code=code or rate_limit_code)
    if status in (408, 409) or status >= 500:
        return TransientProviderError(text, retry_after=retry_after, status_code=status,
                                      code=code)
    return PermanentProviderError(text, status_code=status, code=code)


def without_status(exc: BaseException, sdk: ModuleType,
                   api_key: str | None) -> ProviderError:
    """The class of an SDK call's error that is not an `APIStatusError` (both SDKs name their
    exceptions alike): a timeout or a dropped connection is transient, anything else
    permanent (with the key redacted)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, sdk.APITimeoutError):
        return TransientProviderError("request timed out", code="timeout")
    if isinstance(exc, sdk.APIConnectionError):
        return TransientProviderError("connection error", code="connection_error")
    if isinstance(exc, httpx2.TransportError):
        return TransientProviderError(f"network error: {type(exc).__name__}",
                                      code="connection_error")
    return PermanentProviderError(redact_secrets(f"{type(exc).__name__}: {exc}", api_key))
