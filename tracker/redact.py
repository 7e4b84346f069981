"""Keep secrets out of anything a user or a log sees."""

from __future__ import annotations

import re

_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-]{2})[A-Za-z0-9_\-*]{4,}")


def redact_secrets(text: str, *secrets: str | None) -> str:
    """Mask API keys: every `sk-...` token, and each given secret verbatim."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_PATTERN.sub(r"\1***", text)
