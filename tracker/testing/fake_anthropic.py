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
the `Fault` of `tracker.testing.fake_http`): `http_error` (an Anthropic error body of the
status; `retry-after` etc. from `headers`), `drop_before` (the connection closes unanswered,
nothing applied), `drop_after` (the request is applied, then the connection closes: the lost
create answer), `truncate`/`short` (a results download cut mid-line / without its last line),
`delay` (real seconds).

    python -m tracker.testing.fake_anthropic --port-file url.txt
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from tracker.testing.fake_batches import ManualClock
from tracker.testing.fake_http import (
    FakeHttpServer,
    Fault,
    Response,
    StateSwitch,
    add_address_flags,
    add_run_flags,
    json_answer,
    serve_until_signalled,
)
from tracker.testing.fake_message_batches import (
    MAX_BODY_BYTES,
    MAX_REQUESTS,
    AnthropicApiError,
    FakeMessageBatchState,
    new_request_id,
)

__all__ = ["FakeAnthropic", "Fault", "ManualClock"]

#: The fault kinds `add_fault` takes (no `garble`).
FAULT_KINDS = ("http_error", "drop_before", "drop_after", "truncate", "short", "delay")
#: Messages of injected errors, like the live API's.
_FAULT_MESSAGES = {401: "invalid x-api-key", 404: "Not found",
                   429: "Number of requests has exceeded your rate limit. Please try again "
                        "later.",
                   500: "Internal server error", 529: "Overloaded"}


class FakeAnthropic(FakeHttpServer):
    """The server. Use as a context manager or `start()`/`stop()`; see the module docstring."""

    FAULT_KINDS = FAULT_KINDS  # the module constant above
    THREAD_NAME = "fake-anthropic"

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
        super().__init__(host, port, latency_seconds=latency_seconds)

    # -- eventual-consistency switches (see tracker.testing.fake_message_batches) -----------

    batch_not_found_seconds = StateSwitch()
    results_not_found_seconds = StateSwitch()
    list_lag_seconds = StateSwitch()

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

    def server_time(self) -> float:
        """The fake's clock, so the `Date` header follows it as the batches' times do."""
        return self.state.clock()

    def results_url(self, batch_id: str) -> str:
        return f"{self.base_url}/v1/messages/batches/{batch_id}/results"

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

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        try:
            status, out_headers, payload = self.handle(method, path, query, headers, body)
        except AnthropicApiError as exc:
            return _error_response(exc)
        return Response(status, {**out_headers, "request-id": new_request_id()}, payload)

    def fault_response(self, fault: Fault) -> Response:
        message = fault.message or _FAULT_MESSAGES.get(fault.status,
                                                       f"Injected HTTP {fault.status}")
        error = AnthropicApiError(fault.status, message, fault.type)
        error.headers.update(fault.headers)
        return _error_response(error)

    def oversized_response(self) -> Response:
        return _error_response(AnthropicApiError(
            413, "Request exceeds the maximum allowed number of bytes."))

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
            return json_answer(200, state.batch_json(record, self.results_url(record.id)))
        if not rest and method == "GET":
            with state.lock:
                data = [state.batch_json(b, self.results_url(b.id)) for b in state.listed()]
            return json_answer(200, _page(data, query))
        if len(rest) == 1 and method == "GET":
            with state.lock:
                record = state.get(rest[0], api=True)
                return json_answer(200, state.batch_json(record, self.results_url(record.id)))
        if len(rest) == 1 and method == "DELETE":
            return json_answer(200, state.delete(rest[0]))
        if len(rest) == 2 and rest[1] == "cancel" and method == "POST":
            with state.lock:
                record = state.cancel(rest[0])
                return json_answer(200, state.batch_json(record, self.results_url(record.id)))
        if len(rest) == 2 and rest[1] == "results" and method == "GET":
            return 200, {"Content-Type": "application/x-jsonl"}, state.results(rest[0])
        raise AnthropicApiError(404, "Not found")


def _error_response(error: AnthropicApiError) -> Response:
    """The error answer; its `request-id` header and body agree. Faults never cut it."""
    request_id = new_request_id()
    return Response(error.status, {"Content-Type": "application/json", **error.headers,
                                   "request-id": request_id},
                    json.dumps(error.body(request_id)).encode(), cuttable=False)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_address_flags(parser)
    parser.add_argument("--in-progress-seconds", type=float, default=0.0)
    parser.add_argument("--canceling-seconds", type=float, default=0.0)
    parser.add_argument("--expiry-seconds", type=float, default=86400.0)
    parser.add_argument("--api-key", default=None,
                        help="check this key (x-api-key or Bearer); default: any key")
    add_run_flags(parser)
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
    serve_until_signalled(server, "fake Anthropic Message Batches API", args.port_file)


if __name__ == "__main__":
    main()
