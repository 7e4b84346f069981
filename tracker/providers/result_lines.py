"""Reading a downloaded results file (JSONL) line by line, for any provider: each provider
parses one line's JSON object into a `ProviderResultRow` its own way."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tracker.providers.base import (
    FetchedResults,
    ProviderBatch,
    ProviderResultRow,
    ResultsNotReady,
    missing_result_row,
)

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


class DownloadedResults(FetchedResults):
    """Rows read from downloaded result files, in order (the first line of a custom id wins),
    then a missing-result row for each expected id none of them holds."""

    def __init__(
        self,
        status: ProviderBatch,
        directory: Path,
        files: list[Path],
        expected_custom_ids: Iterable[str] | None,
        parse: LineParser,
        *,
        remove_directory: bool = True,
        lenient: bool = False,
    ) -> None:
        """`lenient` (past the grace period): a corrupt line is skipped (its request counts
        as missing) instead of failing the whole file."""
        self.status = status
        self._directory = directory
        self._files = files
        self._expected = list(expected_custom_ids) if expected_custom_ids is not None else None
        self._parse = parse
        self._remove_directory = remove_directory
        self._lenient = lenient

    def __iter__(self) -> Iterator[ProviderResultRow]:
        seen: set[str] = set()
        for path in self._files:
            try:
                for row in read_lines(path, self._parse, skip_corrupt=self._lenient):
                    if row.custom_id not in seen:
                        seen.add(row.custom_id)
                        yield row
            except CorruptResultLine as exc:
                path.unlink(missing_ok=True)  # downloaded again by the next fetch
                raise ResultsNotReady(f"{path.name} is corrupt ({exc}); will download again",
                                      code="corrupt_download") from exc
        for custom_id in self._expected or ():
            if custom_id not in seen:
                yield missing_result_row(custom_id)

    def close(self) -> None:
        if self._remove_directory:
            shutil.rmtree(self._directory, ignore_errors=True)
