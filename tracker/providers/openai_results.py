"""Parse lines of Batch API output and error files into `ProviderResultRow`s."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tracker.providers.base import ProviderResultRow
from tracker.providers.result_lines import CorruptResultLine, parsed_line, read_lines

log = logging.getLogger(__name__)


def _assistant_text(body: dict[str, Any]) -> str | None:
    """The text a result body holds: a chat message's content, a completion's text, or a
    response's output_text parts (an embedding has none: its vector stays in output_data)."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return _response_text(body.get("output"))
    first = choices[0] if isinstance(choices[0], dict) else {}
    if isinstance(first.get("text"), str):
        return str(first["text"])  # /v1/completions
    message = first.get("message")
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(parts)
    if content is None and message.get("refusal"):
        return None
    return content if isinstance(content, str) else None


def _response_text(output: Any) -> str | None:
    """/v1/responses: the `output_text` parts of its message items, joined."""
    if not isinstance(output, list):
        return None
    parts = [part.get("text", "") for item in output
             if isinstance(item, dict) and item.get("type") == "message"
             for part in item.get("content") or []
             if isinstance(part, dict) and part.get("type") == "output_text"]
    return "".join(parts) if parts else None


def _http_error_message(body: Any, status_code: int) -> tuple[str, str | None]:
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            message = error.get("message") or f"HTTP {status_code}"
            code = error.get("code") or error.get("type")
            return str(message), (str(code) if code is not None else None)
    return f"HTTP {status_code}", None


def _count(value: Any) -> int | None:
    """A usage figure, if it is a whole number (never a bool or a string)."""
    return value if type(value) is int else None


def _detail(usage: Mapping[str, Any], chat_key: str, responses_key: str,
            name: str) -> int | None:
    """A figure inside `usage`'s details object (chat and completions name it one way,
    responses the other)."""
    details = usage.get(chat_key, usage.get(responses_key))
    return _count(details.get(name)) if isinstance(details, dict) else None


def parse_result_line(line: Mapping[str, Any], raw_line: str | None = None) -> ProviderResultRow:
    """One output or error line, either shape (§3.2/§3.3 of the API reference), to a row.
    `raw_line` is the line as it came, kept on a successful row (stored as is, once). Lines
    come from `json.loads`, so objects are plain dicts (checked as such: it is per line)."""
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise CorruptResultLine("result line has no custom_id")
    response = line.get("response")
    error = line.get("error")
    raw_metadata = dict(line)  # copies made in C, then the part not kept dropped
    raw_metadata.pop("response", None)
    if isinstance(response, dict):
        raw_metadata["response"] = kept = dict(response)
        kept.pop("body", None)
        status_code = response.get("status_code")
        body = response.get("body")
        if type(status_code) is int and status_code < 400 and not error:
            body_map: dict[str, Any] = body if isinstance(body, dict) else {}
            usage = body_map.get("usage")
            if not isinstance(usage, dict):
                usage = {}
            return ProviderResultRow(
                custom_id=custom_id,
                output_text=_assistant_text(body_map),
                output_data=body_map,
                raw_metadata=raw_metadata,
                is_success=True,
                status_code=status_code,
                prompt_tokens=_count(usage.get("prompt_tokens", usage.get("input_tokens"))),
                completion_tokens=_count(usage.get(
                    "completion_tokens", usage.get(
                        "output_tokens", 0 if body_map.get("object") == "list" else None))),
                total_tokens=_count(usage.get("total_tokens")),
                cached_tokens=_detail(usage, "prompt_tokens_details", "input_tokens_details",
                                      "cached_tokens"),
                reasoning_tokens=_detail(usage, "completion_tokens_details",
                                         "output_tokens_details", "reasoning_tokens"),
                raw_line=raw_line,
            )
        code_int = status_code if isinstance(status_code, int) else None
        message, code = _http_error_message(body, code_int or 0)
        return ProviderResultRow(
            custom_id=custom_id,
            output_data=dict(body) if isinstance(body, Mapping) else None,
            raw_metadata=raw_metadata,
            error_message=message,
            is_success=False,
            status_code=code_int,
            error_code=code,
        )
    if isinstance(error, Mapping):
        return ProviderResultRow(
            custom_id=custom_id,
            raw_metadata=raw_metadata,
            error_message=str(error.get("message") or error.get("code") or "request failed"),
            is_success=False,
            error_code=str(error["code"]) if error.get("code") is not None else None,
        )
    raise CorruptResultLine(f"result line for {custom_id!r} has neither response nor error")


def read_result_file(path: Path, *, skip_corrupt: bool = False) -> Iterator[ProviderResultRow]:
    """Stream a downloaded output or error file, each line parsed once (`read_lines`)."""
    return read_lines(path, parse_result_line, skip_corrupt=skip_corrupt)


def count_result_lines(path: Path) -> int:
    """The lines of a downloaded file, without parsing them all: a download cut off mid-line
    shows in its last line, which is parsed; a clean cut shows in the count. (A bad line in
    the middle is found when the file is read.)"""
    count, last, last_number = 0, b"", 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                count, last, last_number = count + 1, raw, number
    if count:
        parsed_line(last, path.name, last_number, parse_result_line)
    return count
