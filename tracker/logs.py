"""The daemon's log: one line per record on stderr, as text or as JSON (`--log-format json`,
for a log shipper), with every API key in use masked in the whole line, tracebacks included.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from tracker.redact import redact_secrets

#: Libraries that log every request at INFO.
_NOISY = ("httpx", "httpx2", "openai")


class RedactingFormatter(logging.Formatter):
    """`time LEVEL message`, with the keys masked."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return redact_secrets(super().format(record), *self.secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`,
    `message`, `pid`, `thread`, and `exception` (the traceback) when there is one."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": self._masked(record.getMessage()),
            "pid": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self._masked(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)

    def _masked(self, text: str) -> str:
        return redact_secrets(text, *self.secrets)


def setup_logging(secrets: list[str], log_format: str = "text") -> None:
    """Route every record to stderr in `log_format`; quieten the chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets) if log_format == "json"
                         else RedactingFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A tick that finds its step still running is skipped by design (a step never overlaps
    # itself); APScheduler would warn about each one.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
