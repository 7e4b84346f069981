"""A fake OpenAI Files + Batch API on loopback, with fault injection, for tests and `make demo`.

The real `openai` SDK talks to it unchanged: `OpenAI(base_url=server.base_url, api_key=...)`.
Faults: HTTP errors with retry headers, connections dropped before or after the request is
processed (the "ghost" create), cut-off downloads (`truncate` cuts mid-line, `short` leaves
out the last line), a corrupt download (`garble` cuts the middle line short), delays;
scripted (`add_fault`) or random (`set_random_faults`);
`Fault.every=N` re-arms a scripted fault to fire on every N-th match.
Line outcomes are driven by markers in the last user message:
`[fail:NNN]`, `[fail-once:NNN]`, `[slow]` (never finishes: the batch expires), `[invalid]`,
`[surrogate]` (the reply content ends with a lone surrogate, written as the JSON escape),
`[batch-fail]` (in any line: the batch fails validation with `errors: null`, no line runs).
Eventual-consistency switches (keyword arguments, live attributes and `--kebab-case` flags;
all off by default, timed on the fake clock; `inf` means forever):
`late_files_seconds`: a terminal batch shows null output/error file ids for this long.
`list_lag_seconds`: GET /v1/batches omits batches created less than this long ago.
`batch_not_found_seconds`: retrieve and cancel of a batch answer 404 this long after creation.
`file_not_found_seconds`, `file_not_found_kinds`: result file downloads 404 this long.
`cancel_refusal_status`: not 409: cancelling an ended or cancelling batch answers this status.
`latency_seconds` (real seconds, not the fake clock): every request waits this long before it
is handled, holding no lock, as a call over the internet does (the benchmarks' scale-out row).

    python -m tracker.testing.fake_openai --port-file url.txt
"""

from __future__ import annotations

import argparse
import contextlib
import email.parser
import email.policy
import fnmatch
import json
import random
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tracker.testing.fake_batches import (
    RESULT_KINDS,
    ApiError,
    FakeBatchState,
    ManualClock,
    Responder,
)

__all__ = ["FakeOpenAI", "Fault", "ManualClock"]

FAULT_KINDS = ("http_error", "drop_before", "drop_after", "truncate", "short", "garble",
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


def _error_body(fault: Fault) -> dict[str, Any]:
    status = fault.status
    if status == 429 and fault.code == "insufficient_quota":
        message, type_ = ("You exceeded your current quota, please check your plan and "
                          "billing details."), "insufficient_quota"
    elif status == 429:
        message, type_ = "Rate limit reached for requests. Please try again in 1s.", "requests"
    elif status >= 500:
        message, type_ = "The server had an error while processing your request.", \
            "server_error"
    else:
        message, type_ = f"Injected HTTP {status}.", "invalid_request_error"
    code = fault.code or ("rate_limit_exceeded" if status == 429 else None)
    return {"error": {"message": fault.message or message, "type": fault.type or type_,
                      "param": None, "code": code}}


class _StateSwitch:
    """A FakeOpenAI attribute kept on its FakeBatchState, so a change applies at once."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: FakeOpenAI | None, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.state, self.name)

    def __set__(self, obj: FakeOpenAI, value: Any) -> None:
        setattr(obj.state, self.name, value)


class FakeOpenAI:
    """The server. Use as a context manager or `start()`/`stop()`; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.time,
        validating_seconds: float = 0.0,
        in_progress_seconds: float = 0.0,
        finalizing_seconds: float = 0.0,
        cancelling_seconds: float = 0.0,
        completion_window_seconds: float = 86400.0,
        api_key: str | None = None,
        known_models: set[str] | None = None,
        enqueued_token_limit: int | None = None,
        seed: int = 0,
        late_files_seconds: float = 0.0,
        list_lag_seconds: float = 0.0,
        batch_not_found_seconds: float = 0.0,
        file_not_found_seconds: float = 0.0,
        file_not_found_kinds: frozenset[str] = RESULT_KINDS,
        cancel_refusal_status: int = 409,
        latency_seconds: float = 0.0,
    ) -> None:
        #: Real seconds every request takes before it is handled (no lock held meanwhile), as
        #: a call over the internet does; settable live.
        self.latency_seconds = latency_seconds
        self.state = FakeBatchState(
            clock=clock, validating_seconds=validating_seconds,
            in_progress_seconds=in_progress_seconds, finalizing_seconds=finalizing_seconds,
            cancelling_seconds=cancelling_seconds,
            completion_window_seconds=completion_window_seconds, known_models=known_models,
            enqueued_token_limit=enqueued_token_limit, seed=seed,
            late_files_seconds=late_files_seconds, list_lag_seconds=list_lag_seconds,
            batch_not_found_seconds=batch_not_found_seconds,
            file_not_found_seconds=file_not_found_seconds,
            file_not_found_kinds=frozenset(file_not_found_kinds),
            cancel_refusal_status=cancel_refusal_status)
        self.api_key = api_key
        self.requests: list[tuple[str, str, int | None]] = []
        self.fault_counts: Counter[str] = Counter()
        self._faults: list[Fault] = []
        self._random_rate = 0.0
        self._random_kinds: tuple[str, ...] = ()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._httpd = _QuietServer((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True, name="fake-openai")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
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
            self._random_rate = 0.0

    def set_random_faults(self, rate: float, kinds: tuple[str, ...] = (
            "http_error", "drop_before", "drop_after", "truncate"), seed: int = 1) -> None:
        with self._lock:
            self._random_rate = rate
            self._random_kinds = kinds
            self._random = random.Random(seed)

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
            if self._random_rate and self._random.random() < self._random_rate:
                return self._random_fault(method, path)
        return None

    def _random_fault(self, method: str, path: str) -> Fault | None:
        is_content = path.endswith("/content")
        kinds = [k for k in self._random_kinds
                 if (k != "truncate" or is_content) and (k != "drop_after" or method == "POST")]
        if not kinds:
            return None
        kind = self._random.choice(kinds)
        if kind != "http_error":
            return Fault(kind=kind)
        status, headers = self._random.choice([
            (429, {"retry-after": "0"}), (429, {"retry-after-ms": "10"}), (429, {}),
            (500, {}), (502, {}), (503, {"retry-after": "0"})])
        return Fault(kind=kind, status=status, headers=headers)

    # -- eventual-consistency switches (see the module docstring) ---------------------------

    late_files_seconds = _StateSwitch()
    list_lag_seconds = _StateSwitch()
    batch_not_found_seconds = _StateSwitch()
    file_not_found_seconds = _StateSwitch()
    file_not_found_kinds = _StateSwitch()
    cancel_refusal_status = _StateSwitch()

    # -- introspection ----------------------------------------------------------------------

    @property
    def batches(self) -> dict[str, Any]:
        return self.state.batches

    @property
    def files(self) -> dict[str, Any]:
        return self.state.files

    @property
    def executions(self) -> list[tuple[str, str, str]]:
        """`(batch id, custom_id, outcome)` of every line run so far, by the clock: batches
        nobody reads still run (a ghost is paid for whether or not it is looked at)."""
        with self.state.lock:
            for record in list(self.state.batches.values()):
                self.state.refresh(record)
            return self.state.executions

    @property
    def responder(self) -> Responder | None:
        return self.state.responder

    @responder.setter
    def responder(self, value: Responder | None) -> None:
        self.state.responder = value

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch's JSON as it truly is: the switches do not hide it or its files."""
        with self.state.lock:
            return self.state.batch_json(self.state.get_batch(batch_id), api=False)

    def batch_custom_ids(self, batch_id: str) -> list[str]:
        """The custom ids of the batch's input file as it was at the create (the file may be
        deleted since)."""
        content = self.state.batches[batch_id].input_content
        if content is None:
            return []
        ids = []
        for raw in content.splitlines():
            try:
                ids.append(json.loads(raw)["custom_id"])
            except (ValueError, KeyError, TypeError):
                continue
        return ids

    def count_requests(self, method: str, path_glob: str) -> int:
        return sum(1 for m, p, _ in self.requests
                   if m == method and fnmatch.fnmatch(p, path_glob))

    # -- request handling -------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]],
               headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Route one request; returns (status, headers, body). Raises ApiError."""
        if self.api_key is not None:
            auth = headers.get("Authorization", "")
            if auth != f"Bearer {self.api_key}":
                shown = auth.removeprefix("Bearer ")[:3] + "*****"
                raise ApiError(401, f"Incorrect API key provided: {shown}.",
                               code="invalid_api_key")
        parts = [p for p in path.split("/") if p][1:]  # drop "v1"
        state = self.state
        if parts == ["files"] and method == "POST":
            filename, purpose, content = _parse_upload(headers, body)
            return _json(200, state.upload(filename, purpose, content).as_json())
        if parts == ["files"] and method == "GET":
            records = sorted(list(state.files.values()), key=lambda f: f.created_at,
                             reverse=query.get("order", ["desc"])[0] != "asc")
            wanted = query.get("purpose", [None])[0]
            data = [f.as_json() for f in records if wanted is None or f.purpose == wanted]
            return _json(200, _page(data, query, default_limit=10000))
        if len(parts) == 2 and parts[0] == "files" and method == "GET":
            return _json(200, state.get_file(parts[1]).as_json())
        if len(parts) == 2 and parts[0] == "files" and method == "DELETE":
            state.get_file(parts[1])
            state.files.pop(parts[1], None)
            return _json(200, {"id": parts[1], "object": "file", "deleted": True})
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            content = state.file_content(parts[1])
            return 200, {"Content-Type": "application/octet-stream"}, content
        if parts == ["batches"] and method == "POST":
            record = state.create_batch(json.loads(body or b"{}"))
            # No lock: a list at this very moment may already have moved the new batch on
            # (as a real server's may); the answer is then a little newer.
            return _json(200, state.batch_json(record))
        if parts == ["batches"] and method == "GET":
            with state.lock:
                data = [state.batch_json(b) for b in state.list_batches()]
            return _json(200, _page(data, query, default_limit=20, max_limit=100))
        if len(parts) == 2 and parts[0] == "batches" and method == "GET":
            with state.lock:
                return _json(200, state.batch_json(state.get_batch(parts[1], api=True)))
        if len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
            with state.lock:
                return _json(200, state.batch_json(state.cancel(parts[1])))
        raise ApiError(404, f"Unknown request URL: {method} {path}.")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished mid-request (killed, timed out) is normal here."""


def _json(status: int, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _page(data: list[dict[str, Any]], query: dict[str, list[str]], *, default_limit: int,
          max_limit: int | None = None) -> dict[str, Any]:
    limit = int(query.get("limit", [default_limit])[0])
    if max_limit is not None:
        limit = min(limit, max_limit)
    after = query.get("after", [None])[0]
    if after is not None:
        ids = [d["id"] for d in data]
        data = data[ids.index(after) + 1:] if after in ids else []
    page = data[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(data) > limit}


def _parse_upload(headers: Any, body: bytes) -> tuple[str, str, bytes]:
    content_type = headers.get("Content-Type", "")
    if "multipart/form-data" not in content_type:
        raise ApiError(400, "Expected multipart/form-data.")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
    filename, content = "", b""
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        assert isinstance(payload, bytes)
        if name == "file":
            filename, content = str(part.get_filename() or ""), payload
        elif name:
            fields[str(name)] = payload.decode()
    if "purpose" not in fields:
        raise ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
    return filename, fields["purpose"], content


def _handler_for(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in one write: two small writes meet Nagle and delayed ACK
        # and cost ~40 ms a request on loopback.
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _drop(self, path: str) -> None:
            server.requests.append((self.command, path, None))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _send(self, path: str, status: int, headers: dict[str, str], body: bytes,
                  *, truncate: bool = False, short: bool = False,
                  garble: bool = False) -> None:
            if garble and body.count(b"\n") >= 2:  # the middle line cut in half, the rest whole
                lines = body.split(b"\n")
                middle = (len(lines) - 1) // 2
                lines[middle] = lines[middle][: max(len(lines[middle]) // 2, 1)]
                body = b"\n".join(lines)
            if short and body.rstrip(b"\n"):  # the last line left out, cleanly
                cut = body.rstrip(b"\n")
                body = cut[: cut.rfind(b"\n") + 1]
            if truncate and body.rstrip(b"\n"):
                cut = body.rstrip(b"\n")
                last = cut.rfind(b"\n") + 1
                body = cut[: last + max((len(cut) - last) // 2, 1)]
            server.requests.append((self.command, path, status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self) -> None:
            url = urlsplit(self.path)
            path, query = url.path, parse_qs(url.query)
            body = self._body()
            if server.latency_seconds > 0:
                time.sleep(server.latency_seconds)
            fault = server._pick_fault(self.command, path)
            if fault is not None:
                server.fault_counts[fault.kind] += 1
                if fault.kind == "delay":
                    time.sleep(fault.delay_seconds)
                elif fault.kind == "drop_before":
                    self._drop(path)
                    return
                elif fault.kind == "http_error":
                    self._send(path, fault.status, {"Content-Type": "application/json",
                                                    **fault.headers},
                               json.dumps(_error_body(fault)).encode())
                    return
            try:
                status, headers, payload = server.handle(self.command, path, query,
                                                         self.headers, body)
            except ApiError as exc:
                status, headers = exc.status, {"Content-Type": "application/json"}
                payload = json.dumps(exc.body).encode()
            if fault is not None and fault.kind == "drop_after":
                self._drop(path)
                return
            self._send(path, status, headers, payload,
                       truncate=fault is not None and fault.kind == "truncate",
                       short=fault is not None and fault.kind == "short",
                       garble=fault is not None and fault.kind == "garble")

        do_GET = do_POST = do_DELETE = _serve

    return Handler


def _kinds(text: str) -> frozenset[str]:
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    if not kinds <= RESULT_KINDS:
        raise argparse.ArgumentTypeError(f"kinds are {', '.join(sorted(RESULT_KINDS))}")
    return kinds


def _add_switch_flags(parser: argparse.ArgumentParser) -> None:
    """The eventual-consistency switches; seconds on the fake clock, `inf` for forever."""
    for name in ("late-files", "list-lag", "batch-not-found", "file-not-found"):
        parser.add_argument(f"--{name}-seconds", type=float, default=0.0)
    parser.add_argument("--file-not-found-kinds", type=_kinds, default=RESULT_KINDS,
                        help="comma-separated: output,error")
    parser.add_argument("--cancel-refusal-status", type=int, default=409)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--validating-seconds", type=float, default=0.0)
    parser.add_argument("--in-progress-seconds", type=float, default=0.0)
    parser.add_argument("--finalizing-seconds", type=float, default=0.0)
    parser.add_argument("--cancelling-seconds", type=float, default=0.0)
    parser.add_argument("--completion-window-seconds", type=float, default=86400.0)
    parser.add_argument("--random-fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port-file", type=Path, default=None)
    parser.add_argument("--latency-seconds", type=float, default=0.0,
                        help="real seconds every request takes, as over the internet")
    _add_switch_flags(parser)
    args = parser.parse_args(argv)
    server = FakeOpenAI(
        args.host, args.port, validating_seconds=args.validating_seconds,
        in_progress_seconds=args.in_progress_seconds,
        finalizing_seconds=args.finalizing_seconds,
        cancelling_seconds=args.cancelling_seconds,
        completion_window_seconds=args.completion_window_seconds, seed=args.seed,
        late_files_seconds=args.late_files_seconds, list_lag_seconds=args.list_lag_seconds,
        batch_not_found_seconds=args.batch_not_found_seconds,
        file_not_found_seconds=args.file_not_found_seconds,
        file_not_found_kinds=args.file_not_found_kinds,
        cancel_refusal_status=args.cancel_refusal_status, latency_seconds=args.latency_seconds)
    if args.random_fault_rate:
        server.set_random_faults(args.random_fault_rate, seed=args.seed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"fake OpenAI Batch API at {server.base_url}", flush=True)
    if args.port_file is not None:
        temporary = args.port_file.with_name(args.port_file.name + ".tmp")
        temporary.write_text(server.base_url + "\n")
        temporary.rename(args.port_file)
    while not stop.wait(0.5):
        pass
    server.stop()


if __name__ == "__main__":
    main()
