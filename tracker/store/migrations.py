"""The schema migrations in `schema/<dialect>/NNN_name.sql` (no database library needed, so
the read-only commands can check a file's version without loading SQLAlchemy)."""

from __future__ import annotations

import re
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schema"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migrations(dialect: str = "sqlite") -> list[tuple[int, str, str]]:
    """`(version, name, sql)` of every migration for `dialect`, in order."""
    found = []
    for path in sorted((SCHEMA_DIR / dialect).glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path.stem, path.read_text(encoding="utf-8")))
    return found


def latest_version(dialect: str = "sqlite") -> int:
    """The newest version, from the file names alone."""
    return max(int(match.group(1)) for path in (SCHEMA_DIR / dialect).iterdir()
               if (match := _MIGRATION_NAME.match(path.name)))
