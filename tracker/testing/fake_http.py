"""What the fake batch APIs (`fake_openai`, `fake_anthropic`) share: a loopback HTTP server
with scripted faults, a request log and optional latency.

A fake subclasses `FakeHttpServer` and keeps only its own API: `respond` turns one request
into a `Response` in its wire format (error bodies, request-id header), `fault_response`
writes an injected `http_error` the same way, and `FAULT_KINDS` says which `Fault` kinds it
accepts. The request plumbing here applies the faults around `respond`:
`delay` (real seconds, then the request runs), `drop_before` (the connection closes unanswered,
nothing applied), `http_error` (the fake's error answer instead of the request), `drop_after`
(the request is applied, then the connection closes: the lost answer), and `truncate`,
`short`, `garble` (the answer body cut, see `cut_body`).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self
from urllib.parse import parse_qs, urlsplit

#: Every fault kind the plumbing knows; each fake accepts a subset (its `FAULT_KINDS`).
ALL_FAULT_KINDS = ("http_error", "drop_before", "drop_after", "truncate", "short", "garble",
                   "delay")


@dataclass
class Fault:
    """A scripted fault for requests matching `method` and `path` (fnmatch, no query).

    It lets `skip` matching requests pass, then fires `times` times (None: forever). With
    `every` set, each firing resets `skip` to `every - 1`: `times=None, skip=1, every=2` fires
    on the 2nd, 4th, 6th... matching request.
    """

    method: str = "*"
    path: str = "*"
    kind: str = "http_error"
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    type: str | None = None
    message: str | None = None
    times: int | None = 1
    skip: int = 0
    delay_seconds: float = 0.0
    every: int | None = None

    def matches(self, method: str, path: str) -> bool:
        return fnmatch.fnmatch(method, self.method) and fnmatch.fnmatch(path, self.path)


@dataclass
class Response:
    """One HTTP answer as it leaves the fake: every header but Content-Length is in `headers`.

    `cuttable` False keeps a `truncate`/`short`/`garble` fault from cutting the body (the
    Anthropic fake sends its error bodies whole)."""

    status: int
    headers: dict[str, str]
    body: bytes
    cuttable: bool = True


def json_answer(status: int, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """`(status, headers, body)` of a JSON answer, as a fake's router returns it."""
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def cut_body(body: bytes, kind: str) -> bytes:
    """The body as a `garble`, `short` or `truncate` fault leaves it; others leave it whole.

    `garble`: the middle line cut in half, the rest whole (needs two newlines). `short`: the
    last line left out, cleanly. `truncate`: the last line cut in half."""
    if kind == "garble" and body.count(b"\n") >= 2:
        lines = body.split(b"\n")
        middle = (len(lines) - 1) // 2
        lines[middle] = lines[middle][: max(len(lines[middle]) // 2, 1)]
        return b"\n".join(lines)
    cut = body.rstrip(b"\n")
    if kind == "short" and cut:
        return cut[: cut.rfind(b"\n") + 1]
    if kind == "truncate" and cut:
        last = cut.rfind(b"\n") + 1
        return cut[: last + max((len(cut) - last) // 2, 1)]
    return body


class QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished mid-request (killed, timed out) is normal here."""


class FakeHttpServer:
    """The server side of a fake API: lifecycle, scripted faults, request log, latency.

    Use as a context manager or `start()`/`stop()`. Subclasses set `FAULT_KINDS` and
    `THREAD_NAME` and implement `respond` and `fault_response`."""

    #: The `Fault` kinds `add_fault` accepts.
    FAULT_KINDS: ClassVar[tuple[str, ...]] = ALL_FAULT_KINDS
    #: The name of the thread that serves requests.
    THREAD_NAME: ClassVar[str] = "fake-http"
    #: Request bodies over this many bytes are read, dropped and answered by
    #: `oversized_response` (faults are not applied); None: no limit.
    max_body_bytes: int | None = None

    def __init__(self, host: str, port: int, *, latency_seconds: float = 0.0) -> None:
        #: Real seconds every request takes before it is handled (no lock held meanwhile), as
        #: a call over the internet does; settable live.
        self.latency_seconds = latency_seconds
        #: `(method, path, status)` of every request; status None when the connection dropped.
        self.requests: list[tuple[str, str, int | None]] = []
        self.fault_counts: Counter[str] = Counter()
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._httpd = QuietHTTPServer((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    # -- the fake's own API -----------------------------------------------------------------

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        """Answer one request (API errors included) in the fake's wire format."""
        raise NotImplementedError

    def fault_response(self, fault: Fault) -> Response:
        """The answer an `http_error` fault gives instead of running the request."""
        raise NotImplementedError

    def oversized_response(self) -> Response:
        """The answer to a body over `max_body_bytes`."""
        return Response(413, {}, b"")

    def server_time(self) -> float:
        """The time the HTTP `Date` header of every answer gives (a fake on a manual clock
        returns that clock)."""
        return time.time()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Scheme, host and port (`http://127.0.0.1:PORT`); a fake whose SDK wants more (a
        `/v1`) adds it."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True, name=self.THREAD_NAME)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        if fault.kind not in self.FAULT_KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._clear_unscripted_faults()

    def _pick_fault(self, method: str, path: str) -> Fault | None:
        """The fault this request meets: the first scripted one that fires, else
        `_unscripted_fault`'s."""
        with self._lock:
            for fault in self._faults:
                if not fault.matches(method, path) or fault.times == 0:
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.times is not None:
                    fault.times -= 1
                if fault.every is not None:
                    fault.skip = fault.every - 1
                return fault
            return self._unscripted_fault(method, path)

    def _unscripted_fault(self, method: str, path: str) -> Fault | None:
        """A fault no script asked for (random faults); called with the lock held."""
        return None

    def _clear_unscripted_faults(self) -> None:
        """Turn off what `_unscripted_fault` gives; called by `clear_faults`, lock held."""

    # -- introspection ----------------------------------------------------------------------

    def count_requests(self, method: str, path_glob: str) -> int:
        return sum(1 for m, p, _ in self.requests
                   if m == method and fnmatch.fnmatch(p, path_glob))


class _HasState(Protocol):
    state: Any


class StateSwitch:
    """An attribute of the fake kept on its `state` object, so a change applies at once."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: _HasState | None, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.state, self.name)

    def __set__(self, obj: _HasState, value: Any) -> None:
        setattr(obj.state, self.name, value)


def _handler_for(fake: FakeHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in one write: two small writes meet Nagle and delayed ACK
        # and cost ~40 ms a request on loopback.
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

        def date_time_string(self, timestamp: float | None = None) -> str:
            return super().date_time_string(fake.server_time() if timestamp is None
                                            else timestamp)

        def _body(self) -> bytes | None:
            """The request body; None if it is over `max_body_bytes` (read and dropped, so
            the client still gets its answer)."""
            limit = fake.max_body_bytes
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                body = b"".join(chunks)
                return None if limit is not None and len(body) > limit else body
            length = int(self.headers.get("Content-Length") or 0)
            if limit is None or length <= limit:
                return self.rfile.read(length)
            while length > 0:
                length -= len(self.rfile.read(min(length, 1 << 20)) or b"x" * length)
            return None

        def _drop(self, path: str) -> None:
            fake.requests.append((self.command, path, None))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _send(self, path: str, response: Response, cut: str | None = None) -> None:
            body = response.body
            if cut is not None and response.cuttable:
                body = cut_body(body, cut)
            fake.requests.append((self.command, path, response.status))
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self) -> None:
            url = urlsplit(self.path)
            path, query = url.path, parse_qs(url.query)
            body = self._body()
            if fake.latency_seconds > 0:
                time.sleep(fake.latency_seconds)
            if body is None:
                self._send(path, fake.oversized_response())
                return
            fault = fake._pick_fault(self.command, path)
            if fault is not None:
                fake.fault_counts[fault.kind] += 1
                if fault.kind == "delay":
                    time.sleep(fault.delay_seconds)
                elif fault.kind == "drop_before":
                    self._drop(path)
                    return
                elif fault.kind == "http_error":
                    self._send(path, fake.fault_response(fault))
                    return
            response = fake.respond(self.command, path, query, self.headers, body)
            if fault is not None and fault.kind == "drop_after":
                self._drop(path)
                return
            self._send(path, response, cut=fault.kind if fault is not None else None)

        do_GET = do_POST = do_DELETE = _serve

    return Handler


# -- running a fake as a program ------------------------------------------------------------


def add_address_flags(parser: argparse.ArgumentParser) -> None:
    """`--host` and `--port` (0: a free port)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """`--seed`, `--port-file` and `--latency-seconds`."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port-file", type=Path, default=None)
    parser.add_argument("--latency-seconds", type=float, default=0.0,
                        help="real seconds every request takes, as over the internet")


def serve_until_signalled(server: FakeHttpServer, banner: str, port_file: Path | None) -> None:
    """Start `server`, print `banner` and its base URL, write the URL to `port_file`
    (atomically: whoever waits for the file reads it whole), and serve until SIGTERM or
    SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"{banner} at {server.base_url}", flush=True)
    if port_file is not None:
        temporary = port_file.with_name(port_file.name + ".tmp")
        temporary.write_text(server.base_url + "\n")
        temporary.rename(port_file)
    while not stop.wait(0.5):
        pass
    server.stop()
