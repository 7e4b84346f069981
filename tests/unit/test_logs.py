"""The daemon's log formats: every line one JSON object with `--log-format json`, keys masked
in both formats, tracebacks included."""

from __future__ import annotations

import json
import logging
import sys

from tracker.logs import JsonFormatter, RedactingFormatter

KEY = "sk-proj-THISISASECRETKEY0123456789"


def _record(message: str, *args: object, with_traceback: bool = False) -> logging.LogRecord:
    exc_info = None
    if with_traceback:
        try:
            raise RuntimeError(f"the provider said: bad key {KEY}")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("tracker", logging.ERROR, __file__, 1, message, args, exc_info)


def test_json__one_object_a_line_with_the_fields_a_shipper_expects() -> None:
    line = JsonFormatter([KEY]).format(_record("batch %s: packed %d items", "tb_1", 3))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "batch tb_1: packed 3 items"
    assert entry["level"] == "ERROR" and entry["logger"] == "tracker"
    assert entry["time"].endswith("Z") and len(entry["time"]) == len("2026-11-26T09:00:00.000Z")
    assert {"pid", "thread"} <= set(entry) and "exception" not in entry


def test_json__the_key_is_masked_in_the_message_and_the_traceback() -> None:
    line = JsonFormatter([KEY]).format(
        _record("create refused: %s", f"Incorrect API key provided: {KEY}",
                with_traceback=True))
    entry = json.loads(line)
    assert KEY not in line
    assert "Incorrect API key provided" in entry["message"]
    assert "RuntimeError: the provider said: bad key" in entry["exception"]


def test_text__the_keys_are_masked_in_the_whole_line() -> None:
    """The key in use (verbatim, whatever its form) and anything shaped like an OpenAI key."""
    line = RedactingFormatter(["azure-key-123456"]).format(
        _record("create refused: %s and %s", "azure-key-123456", "sk-proj-abcdefghijkl",
                with_traceback=True))
    assert "azure-key-123456" not in line and "abcdefghijkl" not in line
    assert KEY not in line  # in the traceback
    assert "create refused" in line and "RuntimeError" in line
