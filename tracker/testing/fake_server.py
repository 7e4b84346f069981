"""A fake Batch API (`tracker.testing.fake_openai`, `fake_anthropic`) as a child process on
loopback, for the demo, the examples and the tests of the fakes' flags: no API key, no
network."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

#: Any non-empty key will do: the fake server does not check it.
FAKE_API_KEY = "sk-demo-not-a-real-key"
#: Seconds the server has to write its address before the program gives up.
START_TIMEOUT = 15.0


def fake_openai_server(*options: str) -> AbstractContextManager[str]:
    """`fake_server_process("tracker.testing.fake_openai", *options)`."""
    return fake_server_process("tracker.testing.fake_openai", *options)


@contextmanager
def fake_server_process(module: str, *options: str) -> Iterator[str]:
    """Start `python -m MODULE` (a fake server) with `options` (its `--help` lists them) on a
    free loopback port; yield its base URL; stop it at the end. Exits the program with a
    message if the server does not come up."""
    with tempfile.TemporaryDirectory(prefix="fake-server-") as directory:
        url_file = Path(directory) / "url"
        server = subprocess.Popen(
            [sys.executable, "-m", module, "--port-file", str(url_file), *options],
            stdout=subprocess.DEVNULL,
        )
        try:
            yield _wait_for_url(url_file, server, time.monotonic() + START_TIMEOUT)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)


def fake_credentials(base_url: str) -> dict[str, str]:
    """The environment the `openai` SDK reads, pointed at the fake server of `base_url`."""
    return {"OPENAI_API_KEY": FAKE_API_KEY, "OPENAI_BASE_URL": base_url}


def _wait_for_url(path: Path, process: subprocess.Popen[bytes], deadline: float) -> str:
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text().strip()
        if process.poll() is not None:
            sys.exit(f"the fake server exited with code {process.returncode}")
        time.sleep(0.05)
    sys.exit(f"the fake server did not start within {START_TIMEOUT:.0f} s")
