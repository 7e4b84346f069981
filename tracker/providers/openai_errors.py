"""Turn `openai` SDK exceptions into the provider's transient/permanent error classes.

Reads the status code, the error body and the response headers; never parses `str(exc)`.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import httpx2
import openai

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


def _error_fields(exc: openai.APIStatusError) -> tuple[str | None, str | None, str | None]:
    body: Any = exc.body
    if isinstance(body, Mapping):
        message = body.get("message")
        return (
            str(message) if message else None,
            str(body["code"]) if body.get("code") is not None else None,
            str(body["type"]) if body.get("type") is not None else None,
        )
    if isinstance(body, str) and body.strip():
        return body.strip()[:500], None, None
    return None, None, None


def classify_openai_error(exc: BaseException, *, api_key: str | None = None) -> ProviderError:
    """Map an exception from an SDK call to `TransientProviderError` or `PermanentProviderError`.

    Transient: connection errors and timeouts, 408, 409, 429 (rate limit), 5xx.
    Permanent: 400, 401, 403, 404, 422, other 4xx, and 429 `insufficient_quota`.
    """
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return TransientProviderError("request timed out", code="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return TransientProviderError("connection error", code="connection_error")
    if isinstance(exc, httpx2.TransportError):
        return TransientProviderError(f"network error: {type(exc).__name__}",
                                      code="connection_error")
    if not isinstance(exc, openai.APIStatusError):
        return PermanentProviderError(redact_secrets(f"{type(exc).__name__}: {exc}", api_key))

    status = exc.status_code
    message, code, error_type = _error_fields(exc)
    text = redact_secrets(f"HTTP {status}: {message or 'no message'}", api_key)
    retry_after = parse_retry_after(exc.response.headers)

    if status == 429:
        if code == "insufficient_quota" or error_type == "insufficient_quota":
            return PermanentProviderError(text, status_code=status, code="insufficient_quota")
        return TransientProviderError(
            text,
            retry_after=RATE_LIMIT_DEFAULT_RETRY_AFTER if retry_after is None else retry_after,
            status_code=status,
            code=code or "rate_limit_exceeded",
        )
    if status in (408, 409) or status >= 500:
        return TransientProviderError(text, retry_after=retry_after, status_code=status, code=code)
    return PermanentProviderError(text, status_code=status, code=code)
