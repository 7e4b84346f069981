"""Text as the database can store it."""

from __future__ import annotations

import re

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(value: str) -> str:
    """`value` with each lone UTF-16 surrogate (valid in JSON, impossible in UTF-8) replaced by
    U+FFFD, visibly; any other text is returned unchanged. Python joins valid surrogate pairs
    when it parses JSON, so every surrogate left in a `str` is a lone one."""
    if value.isascii():
        return value
    return _LONE_SURROGATE.sub("\ufffd", value)
