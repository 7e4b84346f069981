"""Reading a downloaded results file (JSONL) line by line, for any provider: each provider
parses one line's JSON object into a `ProviderResultRow` its own way."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tracker.providers.base import ProviderResultRow

log = logging.getLogger(__name__)

#: A provider's parser of one line: the JSON object and the line's text (None when the line
#: is not UTF-8).
LineParser = Callable[[dict[str, Any], str | None], ProviderResultRow]


class CorruptResultLine(ValueError):
    """A result line that is not a JSON object with a `custom_id` (often a cut-off download)."""


def parsed_line(raw: bytes, name: str, number: int, parse: LineParser) -> ProviderResultRow:
    """One line of file `name` (1-based `number`), parsed; `CorruptResultLine` if it is not
    a JSON object the provider's `parse` accepts."""
    text: str | None
    try:
        text = raw.decode("utf-8")  # the codec "utf-8-sig" would do the next line, in Python
        if text.startswith("\ufeff"):
            text = text[1:]  # a byte order mark is not part of the line
    except UnicodeDecodeError:
        text = None  # not UTF-8: parsed from the bytes as json allows; stored re-encoded
    try:
        line = json.loads(text if text is not None else raw)
    except ValueError as exc:
        raise CorruptResultLine(f"{name} line {number}: not valid JSON") from exc
    if not isinstance(line, dict):
        raise CorruptResultLine(f"{name} line {number}: not a JSON object")
    try:
        return parse(line, text.rstrip("\r\n") if text is not None else None)
    except CorruptResultLine as exc:
        raise CorruptResultLine(f"{name} line {number}: {exc}") from None


def read_lines(path: Path, parse: LineParser, *,
               skip_corrupt: bool = False) -> Iterator[ProviderResultRow]:
    """Stream a downloaded JSONL file line by line, each line parsed once; raise
    `CorruptResultLine` on a bad line, or with `skip_corrupt` log it and go on."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield parsed_line(raw, path.name, number, parse)
            except CorruptResultLine as exc:
                if not skip_corrupt:
                    raise
                log.error("skipping a corrupt result line: %s", exc)
