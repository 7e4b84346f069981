"""Turn `openai` SDK exceptions into the provider's transient/permanent error classes.

Reads the status code, the error body and the response headers; never parses `str(exc)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import openai

from tracker.providers.base import PermanentProviderError, ProviderError
from tracker.providers.http_errors import by_status, parse_retry_after, without_status
from tracker.redact import redact_secrets


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
    if not isinstance(exc, openai.APIStatusError):
        return without_status(exc, openai, api_key)

    status = exc.status_code
    message, code, error_type = _error_fields(exc)
    text = redact_secrets(f"HTTP {status}: {message or 'no message'}", api_key)
    retry_after = parse_retry_after(exc.response.headers)

    if status == 429 and "insufficient_quota" in (code, error_type):
        return PermanentProviderError(text, status_code=status, code="insufficient_quota")
    return by_status(status, text, code=code, retry_after=retry_after,
                     rate_limit_code="rate_limit_exceeded")
