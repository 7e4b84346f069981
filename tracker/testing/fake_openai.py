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
import email.parser
import email.policy
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from tracker.testing.fake_batches import (
    RESULT_KINDS,
    ApiError,
    FakeBatchState,
    ManualClock,
    Responder,
)
from tracker.testing.fake_http import (
    ALL_FAULT_KINDS,
    FakeHttpServer,
    Fault,
    Response,
    StateSwitch,
    add_address_flags,
    add_run_flags,
    json_answer,
    serve_until_signalled,
)

__all__ = ["FakeOpenAI", "Fault", "ManualClock"]

#: The fault kinds `add_fault` takes: all the plumbing knows, `garble` included.
FAULT_KINDS = ALL_FAULT_KINDS


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


class FakeOpenAI(FakeHttpServer):
    """The server. Use as a context manager or `start()`/`stop()`; see the module docstring."""

    FAULT_KINDS = ALL_FAULT_KINDS
    THREAD_NAME = "fake-openai"

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
        self._random_rate = 0.0
        self._random_kinds: tuple[str, ...] = ()
        self._random = random.Random(seed)
        super().__init__(host, port, latency_seconds=latency_seconds)

    @property
    def base_url(self) -> str:
        return f"{super().base_url}/v1"

    # -- random faults ----------------------------------------------------------------------

    def set_random_faults(self, rate: float, kinds: tuple[str, ...] = (
            "http_error", "drop_before", "drop_after", "truncate"), seed: int = 1) -> None:
        with self._lock:
            self._random_rate = rate
            self._random_kinds = kinds
            self._random = random.Random(seed)

    def _clear_unscripted_faults(self) -> None:
        self._random_rate = 0.0

    def _unscripted_fault(self, method: str, path: str) -> Fault | None:
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

    late_files_seconds = StateSwitch()
    list_lag_seconds = StateSwitch()
    batch_not_found_seconds = StateSwitch()
    file_not_found_seconds = StateSwitch()
    file_not_found_kinds = StateSwitch()
    cancel_refusal_status = StateSwitch()

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

    # -- request handling -------------------------------------------------------------------

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        try:
            status, out_headers, payload = self.handle(method, path, query, headers, body)
        except ApiError as exc:
            status, out_headers = exc.status, {"Content-Type": "application/json"}
            payload = json.dumps(exc.body).encode()
        return _with_request_id(status, out_headers, payload)

    def fault_response(self, fault: Fault) -> Response:
        return _with_request_id(fault.status, {"Content-Type": "application/json",
                                               **fault.headers},
                                json.dumps(_error_body(fault)).encode())

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
            return json_answer(200, state.upload(filename, purpose, content).as_json())
        if parts == ["files"] and method == "GET":
            records = sorted(list(state.files.values()), key=lambda f: f.created_at,
                             reverse=query.get("order", ["desc"])[0] != "asc")
            wanted = query.get("purpose", [None])[0]
            data = [f.as_json() for f in records if wanted is None or f.purpose == wanted]
            return json_answer(200, _page(data, query, default_limit=10000))
        if len(parts) == 2 and parts[0] == "files" and method == "GET":
            return json_answer(200, state.get_file(parts[1]).as_json())
        if len(parts) == 2 and parts[0] == "files" and method == "DELETE":
            state.get_file(parts[1])
            state.files.pop(parts[1], None)
            return json_answer(200, {"id": parts[1], "object": "file", "deleted": True})
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            content = state.file_content(parts[1])
            return 200, {"Content-Type": "application/octet-stream"}, content
        if parts == ["batches"] and method == "POST":
            record = state.create_batch(json.loads(body or b"{}"))
            # No lock: a list at this very moment may already have moved the new batch on
            # (as a real server's may); the answer is then a little newer.
            return json_answer(200, state.batch_json(record))
        if parts == ["batches"] and method == "GET":
            with state.lock:
                data = [state.batch_json(b) for b in state.list_batches()]
            return json_answer(200, _page(data, query, default_limit=20, max_limit=100))
        if len(parts) == 2 and parts[0] == "batches" and method == "GET":
            with state.lock:
                return json_answer(200, state.batch_json(state.get_batch(parts[1], api=True)))
        if len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
            with state.lock:
                return json_answer(200, state.batch_json(state.cancel(parts[1])))
        raise ApiError(404, f"Unknown request URL: {method} {path}.")


def _with_request_id(status: int, headers: dict[str, str], body: bytes) -> Response:
    """The answer with the `x-request-id` header every OpenAI answer has."""
    return Response(status, {**headers, "x-request-id": f"req_{uuid.uuid4().hex[:24]}"}, body)


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
    add_address_flags(parser)
    parser.add_argument("--validating-seconds", type=float, default=0.0)
    parser.add_argument("--in-progress-seconds", type=float, default=0.0)
    parser.add_argument("--finalizing-seconds", type=float, default=0.0)
    parser.add_argument("--cancelling-seconds", type=float, default=0.0)
    parser.add_argument("--completion-window-seconds", type=float, default=86400.0)
    parser.add_argument("--random-fault-rate", type=float, default=0.0)
    add_run_flags(parser)
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
    serve_until_signalled(server, "fake OpenAI Batch API", args.port_file)


if __name__ == "__main__":
    main()
