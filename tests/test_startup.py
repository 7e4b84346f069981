"""Commands that do not talk to a provider start without loading what only others need.

Each case runs one command through click in a fresh interpreter and lists the modules it
loaded: the OpenAI SDK, the HTTP client and the scheduler belong to `tracker run` (and to
`cancel`, which calls the provider), the config parser to the commands that read the config,
the SQLModel tables to the commands that read whole batch rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracker import cli
from tracker.providers import registry
from tracker.store import engine

#: Run in the child: argv[1] is the command line as JSON; the last stdout line lists modules.
CHILD = """
import json, sys
from tracker.cli import cli
cli.main(json.loads(sys.argv[1]), prog_name="tracker", standalone_mode=False)
print(json.dumps(sorted(sys.modules)))
"""

PROVIDER = {"openai", "httpx2", "apscheduler", "tracker.providers.openai", "tracker.context",
            "tracker.daemon", "tracker.steps"}
CONFIG = {"yaml", "tracker.config"}
TABLES = {"sqlmodel", "tracker.models"}
DATABASE = {"sqlalchemy", "pydantic"}
#: The reports read the config's prices (YAML) without validating the whole config.
PRICED = PROVIDER | {"tracker.config"} | TABLES | {"pydantic"}


def _loaded(tmp_path: Path, *args: str) -> set[str]:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OPENAI_API_KEY", "TRACKER_CONFIG", "TRACKER_DB")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(["--db", f"sqlite:///{tmp_path / 't.db'}",
                                                  *args])],
        capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _heavy(loaded: set[str], forbidden: set[str]) -> list[str]:
    """The modules of `loaded` that are, or are inside, one of `forbidden`."""
    return sorted(name for name in loaded
                  if any(name == top or name.startswith(top + ".") for top in forbidden))


@pytest.mark.parametrize(("args", "forbidden"), [
    pytest.param(["--help"], PROVIDER | CONFIG | TABLES | DATABASE, id="help"),
    pytest.param(["status", "--json"], PRICED, id="status"),
    pytest.param(["status"], PRICED, id="status-drawn"),
    pytest.param(["results"], PRICED, id="results"),
    pytest.param(["cost"], PRICED, id="cost"),
    pytest.param(["init"], PROVIDER | CONFIG | TABLES | {"pydantic"}, id="init"),
    pytest.param(["retry"], PROVIDER | CONFIG | TABLES | {"pydantic"}, id="retry"),
    pytest.param(["enqueue", "items.jsonl", "--model", "gpt-5-mini"], PROVIDER | TABLES,
                 id="enqueue"),
])
def test_command__loads_only_what_it_needs(tmp_path: Path, args: list[str],
                                           forbidden: set[str]) -> None:
    (tmp_path / "items.jsonl").write_text(json.dumps(
        {"id": "a", "input_payload": {"messages": [{"role": "user", "content": "hi"}]}}) + "\n")
    assert _heavy(_loaded(tmp_path, *args), forbidden) == []


def test_registry__knows_openai_before_importing_it() -> None:
    done = subprocess.run([sys.executable, "-c", (
        "import sys\n"
        "from tracker.providers import registry\n"
        "assert 'openai' in registry.known_providers()\n"
        "assert 'openai' not in sys.modules\n"
        "assert registry.provider_class('openai').api_key_env == 'OPENAI_API_KEY'\n"
        "assert 'openai' in sys.modules\n")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_registry__class_and_path_of_one_provider_are_one_registration() -> None:
    from tracker.providers.openai import OpenAIBatchProvider

    assert registry.provider_class("openai") is OpenAIBatchProvider
    registry.register_provider("openai", "tracker.providers.openai:OpenAIBatchProvider")
    registry.register_provider("path-test", "tracker.providers.openai:OpenAIBatchProvider")
    try:
        registry.register_provider("path-test", OpenAIBatchProvider)
        assert registry.provider_class("path-test") is OpenAIBatchProvider
        with pytest.raises(ValueError, match="already registered"):
            registry.register_provider("path-test", "tracker.providers.base:BaseBatchProvider")
    finally:
        registry._factories.pop("path-test", None)


def test_cli_default_database__is_the_engines() -> None:
    assert cli.DEFAULT_DB_URL == engine.DEFAULT_DB_URL
