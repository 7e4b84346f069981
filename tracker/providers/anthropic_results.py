"""Parse lines of a Message Batch results file into `ProviderResultRow`s.

A line is `{"custom_id", "result": {"type": "succeeded" | "errored" | "canceled" | "expired",
...}}`: a succeeded one holds the `message`, an errored one the API error body under `error`.
Lines come in no particular order; the tracker joins them by `custom_id` (the wire id).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tracker.providers.anthropic_errors import error_fields, status_for_error_type
from tracker.providers.base import ProviderResultRow
from tracker.providers.result_lines import CorruptResultLine, read_lines

log = logging.getLogger(__name__)

__all__ = ["CorruptResultLine", "count_result_lines", "parse_result_line", "read_result_file"]

#: `error_code` of a request its batch's cancel stopped (the tracker's cancelled code).
CANCELED_CODE = "batch_cancelled"
#: `error_code` of a request the batch's 24 hours ran out on.
EXPIRED_CODE = "batch_expired"


def _count(value: Any) -> int | None:
    """A usage figure, if it is a whole number (never a bool or a string)."""
    return value if type(value) is int else None


def message_text(message: Mapping[str, Any]) -> str | None:
    """The text blocks of a message's `content`, joined (None when it has none: a reply of
    tool calls only)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = [block.get("text", "") for block in content
             if isinstance(block, dict) and block.get("type") == "text"
             and isinstance(block.get("text"), str)]
    return "".join(parts) if parts else None


def _succeeded(custom_id: str, line: dict[str, Any], result: dict[str, Any],
               raw_line: str | None) -> ProviderResultRow:
    message = result.get("message")
    message = message if isinstance(message, dict) else {}
    usage = message.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    fresh = _count(usage.get("input_tokens"))
    cache_read = _count(usage.get("cache_read_input_tokens"))
    cache_write = _count(usage.get("cache_creation_input_tokens"))
    completion = _count(usage.get("output_tokens"))
    # Anthropic's input_tokens leaves out the cached parts; the tracker's prompt_tokens is the
    # whole prompt, of which cached_tokens were read from the cache.
    prompt = None if fresh is None else fresh + (cache_read or 0) + (cache_write or 0)
    return ProviderResultRow(
        custom_id=custom_id,
        output_text=message_text(message),
        output_data=line,
        raw_metadata={"custom_id": custom_id, "type": "succeeded",
                      "message_id": message.get("id")},
        is_success=True,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=None if prompt is None or completion is None else prompt + completion,
        cached_tokens=cache_read,
        reasoning_tokens=None,
        raw_line=raw_line,
    )


def parse_result_line(line: dict[str, Any], raw_line: str | None = None) -> ProviderResultRow:
    """One results line to a row; `raw_line` (the line as it came) is kept on a succeeded
    row. Raises `CorruptResultLine` for a line without a `custom_id` or a result type."""
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise CorruptResultLine("result line has no custom_id")
    result = line.get("result")
    kind = result.get("type") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(kind, str):
        raise CorruptResultLine(f"result line for {custom_id!r} has no result type")
    if kind == "succeeded":
        return _succeeded(custom_id, line, result, raw_line)
    metadata = {"custom_id": custom_id, "type": kind}
    if kind == "errored":
        message, error_type = error_fields(result.get("error"))
        return ProviderResultRow(
            custom_id=custom_id,
            output_data=line,
            raw_metadata=metadata,
            error_message=message or f"request errored ({error_type or 'no error type'})",
            status_code=status_for_error_type(error_type),
            error_code=error_type or "api_error",
        )
    if kind == "canceled":
        return ProviderResultRow(
            custom_id=custom_id, raw_metadata=metadata, error_code=CANCELED_CODE,
            error_message="the request was canceled before it ran (the batch was canceled)")
    if kind == "expired":
        return ProviderResultRow(
            custom_id=custom_id, raw_metadata=metadata, error_code=EXPIRED_CODE,
            error_message="the batch expired (24 hours) before the request ran")
    # A result type this code does not know: not a success, retried (a server-side status).
    return ProviderResultRow(
        custom_id=custom_id, output_data=line, raw_metadata=metadata,
        error_message=f"unknown result type {kind!r}", error_code=kind,
        status_code=status_for_error_type(None))


def read_result_file(path: Path, *, skip_corrupt: bool = False) -> Iterator[ProviderResultRow]:
    """Stream a downloaded results file, each line parsed once (`read_lines`)."""
    return read_lines(path, parse_result_line, skip_corrupt=skip_corrupt)


def count_result_lines(path: Path, *, skip_corrupt: bool = False) -> int:
    """The good lines of a downloaded file. Every line is parsed (results come in any order,
    so a cut-off line can be anywhere a retried download put it, and the count must be of
    lines that parse); a bad line raises `CorruptResultLine`, or with `skip_corrupt` is not
    counted."""
    return sum(1 for _ in read_result_file(path, skip_corrupt=skip_corrupt))
