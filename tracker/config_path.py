"""Which config file is read (no validation library needed to answer)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGED_CONFIG = Path(__file__).resolve().parent / "config" / "llm_config.yaml"
LOCAL_CONFIG = Path("llm_config.yaml")


def default_config_path() -> Path:
    """`$TRACKER_CONFIG`, else `./llm_config.yaml` if it exists, else the packaged default."""
    env = os.environ.get("TRACKER_CONFIG")
    if env:
        return Path(env)
    return LOCAL_CONFIG if LOCAL_CONFIG.exists() else PACKAGED_CONFIG
