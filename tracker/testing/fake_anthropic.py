"""A fake Anthropic Message Batches API on loopback, with fault injection, for tests and demos.

The real `anthropic` SDK talks to it unchanged:
`anthropic.Anthropic(api_key=..., base_url=server.base_url)` (the base URL has no `/v1`: the SDK
adds it). Endpoints: POST/GET /v1/messages/batches, GET/DELETE /v1/messages/batches/{id},
POST /v1/messages/batches/{id}/cancel, and the batch's `results_url`
(/v1/messages/batches/{id}/results, JSONL in no particular order). Errors are
`{"type": "error", "error": {"type", "message"}, "request_id"}` with a `request-id` header.
A key given as `api_key` is checked in `x-api-key` or `Authorization: Bearer` (SDK 2.x sends the
latter); `anthropic-version` is required, as the SDK always sends it.
Lifecycle, line markers (`[fail:400]`, `[fail:500]`, `[slow]`, `[usage:P,C,K,R]`) and the
eventual-consistency switches are described in `tracker.testing.fake_message_batches`; the
switches are keyword arguments, live attributes and `--kebab-case` flags.
Faults: scripted `Fault(method, path, kind, status, headers, times, skip, every)` (`add_fault`;
the `Fault` of `tracker.testing.fake_openai`): `http_error` (an Anthropic error body of the
status; `retry-after` etc. from `headers`), `drop_before` (the connection closes unanswered,
nothing applied), `drop_after` (the request is applied, then the connection closes: the lost
create answer), `truncate`/`short` (a results download cut mid-line / without its last line),
`delay` (real seconds).

    python -m tracker.testing.fake_anthropic --port-file url.txt
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
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tracker.testing.fake_batches import ManualClock
from tracker.testing.fake_message_batches import (
    MAX_BODY_BYTES,
    MAX_REQUESTS,
    AnthropicApiError,
    FakeMessageBatchState,
    new_request_id,
)
from tracker.testing.fake_openai import Fault

__all__ = ["FakeAnthropic", "Fault", "ManualClock"]

FAULT_KINDS = ("http_error", "drop_before", "drop_after", "truncate", "short", "delay")
#: Messages of injected errors, like the live API's.
_FAULT_MESSAGES = {401: "invalid x-api-key", 404: "Not found",
                   429: "Number of requests has exceeded your rate limit. Please try again "
                        "later.",
                   500: "Internal server error", 529: "Overloaded"}


def _fault_error(fault: Fault) -> AnthropicApiError:
    message = fault.message or _FAULT_MESSAGES.get(fault.status, f"Injected HTTP {fault.status}")
    return AnthropicApiError(fault.status, message, fault.type)


class _StateSwitch:
    """A FakeAnthropic attribute kept on its state, so a change applies at once."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: FakeAnthropic | None, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.state, self.name)

    def __set__(self, obj: FakeAnthropic, value: Any) -> None:
        setattr(obj.state, self.name, value)


class FakeAnthropic:
    """The server. Use as a context manager or `start()`/`stop()`; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.time,
        in_progress_seconds: float = 0.0,
        canceling_seconds: float = 0.0,
        expiry_seconds: float = 86400.0,
        api_key: str | None = None,
        require_version: bool = True,
        max_requests: int = MAX_REQUESTS,
        max_body_bytes: int = MAX_BODY_BYTES,
        seed: int = 0,
        batch_not_found_seconds: float = 0.0,
        results_not_found_seconds: float = 0.0,
        list_lag_seconds: float = 0.0,
        latency_seconds: float = 0.0,
    ) -> None:
        self.state = FakeMessageBatchState(
            clock=clock, in_progress_seconds=in_progress_seconds,
            canceling_seconds=canceling_seconds, expiry_seconds=expiry_seconds,
            max_requests=max_requests, seed=seed,
            batch_not_found_seconds=batch_not_found_seconds,
            results_not_found_seconds=results_not_found_seconds,
            list_lag_seconds=list_lag_seconds)
        self.api_key = api_key
        self.require_version = require_version
        self.max_body_bytes = max_body_bytes
        #: Real seconds every request takes before it is handled (no lock held); settable live.
        self.latency_seconds = latency_seconds
        #: `(method, path, status)` of every request; status None when the connection dropped.
        self.requests: list[tuple[str, str, int | None]] = []
        self.fault_counts: Counter[str] = Counter()
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """For `anthropic.Anthropic(base_url=...)`: scheme, host and port, no `/v1`."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAnthropic:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True, name="fake-anthropic")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _pick_fault(self, method: str, path: str) -> Fault | None:
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
        return None

    # -- eventual-consistency switches (see tracker.testing.fake_message_batches) -----------

    batch_not_found_seconds = _StateSwitch()
    results_not_found_seconds = _StateSwitch()
    list_lag_seconds = _StateSwitch()

    # -- introspection ----------------------------------------------------------------------

    @property
    def batches(self) -> dict[str, Any]:
        return self.state.batches

    @property
    def executions(self) -> list[tuple[str, str, str]]:
        """`(batch id, custom_id, result type)` of every request ended so far, by the clock:
        batches nobody reads still run (a lost create is paid for all the same)."""
        with self.state.lock:
            for record in list(self.state.batches.values()):
                self.state.refresh(record)
            return list(self.state.executions)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch's JSON as it truly is: the switches do not hide it."""
        with self.state.lock:
            return self.state.batch_json(self.state.get(batch_id), self.results_url(batch_id))

    def batch_custom_ids(self, batch_id: str) -> list[str]:
        """The custom ids sent in the batch's create, in order (deleted batches too)."""
        record = self.state.batches.get(batch_id) or self.state.deleted[batch_id]
        return [r["custom_id"] for r in record.requests]

    def results_url(self, batch_id: str) -> str:
        return f"{self.base_url}/v1/messages/batches/{batch_id}/results"

    def count_requests(self, method: str, path_glob: str) -> int:
        return sum(1 for m, p, _ in self.requests
                   if m == method and fnmatch.fnmatch(p, path_glob))

    # -- request handling -------------------------------------------------------------------

    def _check_headers(self, headers: Any) -> None:
        if self.api_key is not None:
            key = headers.get("x-api-key")
            auth = headers.get("Authorization", "")
            if key is None and auth.startswith("Bearer "):
                key = auth.removeprefix("Bearer ")
            if key is None:
                raise AnthropicApiError(401, "x-api-key header is required")
            if key != self.api_key:
                raise AnthropicApiError(401, "invalid x-api-key")
        if self.require_version and not headers.get("anthropic-version"):
            raise AnthropicApiError(400, "anthropic-version: header is required")

    def handle(self, method: str, path: str, query: dict[str, list[str]],
               headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Route one request; returns (status, headers, body). Raises AnthropicApiError."""
        self._check_headers(headers)
        parts = [p for p in path.split("/") if p]
        if parts[:3] != ["v1", "messages", "batches"]:
            raise AnthropicApiError(404, "Not found")
        rest = parts[3:]
        state = self.state
        if not rest and method == "POST":
            try:
                payload = json.loads(body or b"null")
            except ValueError as exc:
                raise AnthropicApiError(400, "There was an issue with your request body: "
                                        "the body is not valid JSON.") from exc
            record = state.create(payload)
            # The create answers `in_progress` as it was made, even with no in-progress time.
            return _json(200, state.batch_json(record, self.results_url(record.id)))
        if not rest and method == "GET":
            with state.lock:
                data = [state.batch_json(b, self.results_url(b.id)) for b in state.listed()]
            return _json(200, _page(data, query))
        if len(rest) == 1 and method == "GET":
            with state.lock:
                record = state.get(rest[0], api=True)
                return _json(200, state.batch_json(record, self.results_url(record.id)))
        if len(rest) == 1 and method == "DELETE":
            return _json(200, state.delete(rest[0]))
        if len(rest) == 2 and rest[1] == "cancel" and method == "POST":
            with state.lock:
                record = state.cancel(rest[0])
                return _json(200, state.batch_json(record, self.results_url(record.id)))
        if len(rest) == 2 and rest[1] == "results" and method == "GET":
            return 200, {"Content-Type": "application/x-jsonl"}, state.results(rest[0])
        raise AnthropicApiError(404, "Not found")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished mid-request (killed, timed out) is normal here."""


def _json(status: int, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _page(data: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    """One page of the list (newest first): `limit` 1..1000 (default 20), after `after_id` or
    immediately before `before_id`; `has_more` tells of more in that direction."""
    try:
        limit = int(query.get("limit", ["20"])[0])
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise AnthropicApiError(400, "limit: Input should be greater than or equal to 1 and "
                                "less than or equal to 1000")
    after = query.get("after_id", [None])[0]
    before = query.get("before_id", [None])[0]
    if after is not None and before is not None:
        raise AnthropicApiError(400, "Cannot specify both after_id and before_id")
    ids = [d["id"] for d in data]
    if before is not None:
        end = ids.index(before) if before in ids else 0
        start = max(0, end - limit)
        page, has_more = data[start:end], start > 0
    else:
        start = ids.index(after) + 1 if after is not None and after in ids else (
            len(ids) if after is not None else 0)
        page, has_more = data[start:start + limit], len(data) > start + limit
    return {"data": page, "has_more": has_more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None}


def _handler_for(server: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in one write (no Nagle / delayed-ACK stall on loopback).
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

        def _body(self) -> bytes | None:
            """The request body; None if it is over the server's size limit (read and
            dropped, so the client still gets its 413)."""
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
                return None if len(body) > server.max_body_bytes else body
            length = int(self.headers.get("Content-Length") or 0)
            if length <= server.max_body_bytes:
                return self.rfile.read(length)
            while length > 0:
                length -= len(self.rfile.read(min(length, 1 << 20)) or b"x" * length)
            return None

        def _drop(self, path: str) -> None:
            server.requests.append((self.command, path, None))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _send(self, path: str, status: int, headers: dict[str, str], body: bytes,
                  request_id: str, *, truncate: bool = False, short: bool = False) -> None:
            if short and body.rstrip(b"\n"):  # the last line left out, cleanly
                cut = body.rstrip(b"\n")
                body = cut[: cut.rfind(b"\n") + 1]
            if truncate and body.rstrip(b"\n"):  # the last line cut in half
                cut = body.rstrip(b"\n")
                last = cut.rfind(b"\n") + 1
                body = cut[: last + max((len(cut) - last) // 2, 1)]
            server.requests.append((self.command, path, status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("request-id", request_id)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_error(self, path: str, error: AnthropicApiError) -> None:
            request_id = new_request_id()
            self._send(path, error.status, {"Content-Type": "application/json",
                                            **error.headers},
                       json.dumps(error.body(request_id)).encode(), request_id)

        def _serve(self) -> None:
            url = urlsplit(self.path)
            path, query = url.path, parse_qs(url.query)
            body = self._body()
            if server.latency_seconds > 0:
                time.sleep(server.latency_seconds)
            if body is None:
                self._send_error(path, AnthropicApiError(
                    413, "Request exceeds the maximum allowed number of bytes."))
                return
            fault = server._pick_fault(self.command, path)
            if fault is not None:
                server.fault_counts[fault.kind] += 1
                if fault.kind == "delay":
                    time.sleep(fault.delay_seconds)
                elif fault.kind == "drop_before":
                    self._drop(path)
                    return
                elif fault.kind == "http_error":
                    error = _fault_error(fault)
                    error.headers.update(fault.headers)
                    self._send_error(path, error)
                    return
            try:
                status, headers, payload = server.handle(self.command, path, query,
                                                         self.headers, body)
            except AnthropicApiError as exc:
                if fault is not None and fault.kind == "drop_after":
                    self._drop(path)
                    return
                self._send_error(path, exc)
                return
            if fault is not None and fault.kind == "drop_after":
                self._drop(path)
                return
            self._send(path, status, headers, payload, new_request_id(),
                       truncate=fault is not None and fault.kind == "truncate",
                       short=fault is not None and fault.kind == "short")

        do_GET = do_POST = do_DELETE = _serve

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--in-progress-seconds", type=float, default=0.0)
    parser.add_argument("--canceling-seconds", type=float, default=0.0)
    parser.add_argument("--expiry-seconds", type=float, default=86400.0)
    parser.add_argument("--api-key", default=None,
                        help="check this key (x-api-key or Bearer); default: any key")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port-file", type=Path, default=None)
    parser.add_argument("--latency-seconds", type=float, default=0.0,
                        help="real seconds every request takes, as over the internet")
    for name in ("batch-not-found", "results-not-found", "list-lag"):
        parser.add_argument(f"--{name}-seconds", type=float, default=0.0,
                            help="on the fake clock; inf: forever")
    args = parser.parse_args(argv)
    server = FakeAnthropic(
        args.host, args.port, in_progress_seconds=args.in_progress_seconds,
        canceling_seconds=args.canceling_seconds, expiry_seconds=args.expiry_seconds,
        api_key=args.api_key, seed=args.seed,
        batch_not_found_seconds=args.batch_not_found_seconds,
        results_not_found_seconds=args.results_not_found_seconds,
        list_lag_seconds=args.list_lag_seconds, latency_seconds=args.latency_seconds)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"fake Anthropic Message Batches API at {server.base_url}", flush=True)
    if args.port_file is not None:
        temporary = args.port_file.with_name(args.port_file.name + ".tmp")
        temporary.write_text(server.base_url + "\n")
        temporary.rename(args.port_file)
    while not stop.wait(0.5):
        pass
    server.stop()


if __name__ == "__main__":
    main()
