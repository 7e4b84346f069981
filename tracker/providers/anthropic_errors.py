"""Turn `anthropic` SDK exceptions into the provider's transient/permanent error classes.

Reads the status code, the error body (`{"type": "error", "error": {"type", "message"}}`) and
the response headers; never parses `str(exc)`. The retry hint and the classes by status are
shared with the OpenAI provider (`tracker.providers.http_errors`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic

from tracker.providers.base import ProviderError
from tracker.providers.http_errors import by_status, parse_retry_after, without_status
from tracker.redact import redact_secrets

#: The HTTP status each Anthropic error type stands for (docs "Errors"); a result line that
#: errored carries only the type, and the tracker decides by status (4xx other than
#: 408/409/429 is permanent). An unknown type counts as a server error.
ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
UNKNOWN_ERROR_STATUS = 500


def status_for_error_type(error_type: str | None) -> int:
    """The HTTP status of an error type (500 for one not known)."""
    return ERROR_TYPE_STATUS.get(error_type or "", UNKNOWN_ERROR_STATUS)


def error_fields(body: Any) -> tuple[str | None, str | None]:
    """`(message, type)` of an Anthropic error body, or of a plain-text body."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            message = error.get("message")
            kind = error.get("type")
            return (str(message) if message else None,
                    str(kind) if kind is not None and kind != "error" else None)
        return None, None
    if isinstance(body, str) and body.strip():
        return body.strip()[:500], None
    return None, None


def classify_anthropic_error(exc: BaseException, *,
                             api_key: str | None = None) -> ProviderError:
    """Map an exception from an SDK call to `TransientProviderError` or `PermanentProviderError`.

    Transient: connection errors and timeouts, 408, 409, 429 (rate limit, 60 s without a
    hint), 529 (overloaded) and every other 5xx. Permanent: 400, 401, 402, 403, 404, 413 and
    the other 4xx; `code` is the error type of the body.
    """
    if not isinstance(exc, anthropic.APIStatusError):
        return without_status(exc, anthropic, api_key)

    status = exc.status_code
    message, error_type = error_fields(exc.body)
    text = redact_secrets(f"HTTP {status}: {message or 'no message'}", api_key)
    retry_after = parse_retry_after(exc.response.headers)

    return by_status(status, text, code=error_type, retry_after=retry_after,
                     rate_limit_code="rate_limit_error")
