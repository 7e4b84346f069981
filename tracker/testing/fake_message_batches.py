"""State of the fake Anthropic Message Batches API: batches, validation and request execution.

A batch's status is computed lazily from the clock whenever it is read (no background thread),
as in `tracker.testing.fake_batches`: a batch is `in_progress` from its create; request i of n
finishes at created + (i + 1) / n * in_progress_seconds, and the batch is `ended` when the last
one has. A cancel makes it `canceling` for `canceling_seconds`, then `ended`: requests finished
by the cancel keep their results, the others are `canceled`. A batch still running at
created + expiry_seconds (a `[slow]` request never finishes) ends then: the unfinished requests
are `expired`. As on the real API, `request_counts` show every request as `processing` until the
batch ends, and `results_url` is null until then.

Markers in the text of the last user message of a request's `messages`:
`[fail:400]` (errored, invalid_request_error; any 4xx likewise), `[fail:500]` (errored,
api_error; 529 gives overloaded_error), `[slow]` (never finishes: the batch expires),
`[usage:P,C,K,R]` (the message reports input_tokens P, output_tokens C,
cache_read_input_tokens K and cache_creation_input_tokens R, instead of estimates).
The reply text is `echo: <last user text>`.

Eventual-consistency switches (all off by default; on the fake clock; settable live; `inf`
means forever):
batch_not_found_seconds: retrieve and cancel answer 404 this long after the create.
results_not_found_seconds: the results URL answers 404 this long after the batch ended.
list_lag_seconds: the list omits batches created less than this long ago.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tracker.testing.fake_batch_store import BatchStore

#: The custom_id pattern of the API reference (batch_create_params / docs).
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
#: The `error.type` the API gives each status (docs "Errors"; SDK types/shared/error_type.py).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 409: "conflict_error",
               413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               504: "timeout_error", 529: "overloaded_error"}
_FAIL = re.compile(r"\[fail:(\d{3})\]")
_USAGE = re.compile(r"\[usage:(\d+),(\d+),(\d+),(\d+)\]")


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def new_request_id() -> str:
    return f"req_011C{uuid.uuid4().hex[:20]}"


def rfc3339(seconds: float | None) -> str | None:
    """RFC 3339 with microseconds and `Z`, as the API writes its times."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AnthropicApiError(Exception):
    """An HTTP error answer: status, the error type and message (`{"type": "error", ...}`)."""

    def __init__(self, status: int, message: str, type_: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_ or error_type(status)
        self.message = message
        self.headers = headers or {}

    def body(self, request_id: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.type, "message": self.message},
                "request_id": request_id}


@dataclass
class MessageBatchRecord:
    id: str
    seq: int
    created: float
    requests: list[dict[str, Any]]
    cancel_at: float | None = None
    ended: float | None = None
    results: list[dict[str, Any]] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.ended is not None:
            return "ended"
        return "canceling" if self.cancel_at is not None else "in_progress"


def last_user_text(params: dict[str, Any]) -> str:
    """The text the markers are read from: the last message's text (string or text blocks)."""
    messages = params.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content", "") if isinstance(last, dict) else ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type", "text") == "text")
    return str(content)


def estimate_tokens(params: dict[str, Any]) -> int:
    return len(json.dumps([params.get("system", ""), params.get("messages", [])])) // 4 + 1


class FakeMessageBatchState(BatchStore[MessageBatchRecord]):
    """Everything the fake server remembers; every read and change takes the lock."""

    def __init__(self, *, clock: Callable[[], float], in_progress_seconds: float = 0.0,
                 canceling_seconds: float = 0.0, expiry_seconds: float = 86400.0,
                 max_requests: int = MAX_REQUESTS, seed: int = 0,
                 batch_not_found_seconds: float = 0.0, results_not_found_seconds: float = 0.0,
                 list_lag_seconds: float = 0.0) -> None:
        super().__init__(clock=clock, seed=seed, list_lag_seconds=list_lag_seconds,
                         batch_not_found_seconds=batch_not_found_seconds)
        self.in_progress_seconds = in_progress_seconds
        self.canceling_seconds = canceling_seconds
        self.expiry_seconds = expiry_seconds
        self.max_requests = max_requests
        # eventual-consistency switch, read live on every request
        self.results_not_found_seconds = results_not_found_seconds
        #: Batches deleted through the API (tests may still look at them).
        self.deleted: dict[str, MessageBatchRecord] = {}

    # -- create -----------------------------------------------------------------------------

    def create(self, body: Any) -> MessageBatchRecord:
        requests = self._validate(body)
        with self.lock:
            record = MessageBatchRecord(f"msgbatch_01{uuid.uuid4().hex[:22]}", next(self._seq),
                                        self.clock(), requests)
            for index, request in enumerate(requests):
                request["_index"] = index
                request["_slow"] = "[slow]" in last_user_text(request["params"])
            self.batches[record.id] = record
            return record

    def _validate(self, body: Any) -> list[dict[str, Any]]:
        """The synchronous checks; a failure refuses the whole batch with a 400 whose message
        is pydantic-style and names the request's index, as the live API's do."""
        def bad(message: str) -> AnthropicApiError:
            return AnthropicApiError(400, message)

        if not isinstance(body, dict) or "requests" not in body:
            raise bad("requests: Field required")
        requests = body["requests"]
        if not isinstance(requests, list):
            raise bad("requests: Input should be a valid list")
        if not requests:
            raise bad("requests: List should have at least 1 item after validation, not 0")
        if len(requests) > self.max_requests:
            raise bad(f"requests: List should have at most {self.max_requests} items after "
                      f"validation, not {len(requests)}")
        seen: set[str] = set()
        checked: list[dict[str, Any]] = []
        for index, request in enumerate(requests):
            where = f"requests.{index}"
            if not isinstance(request, dict):
                raise bad(f"{where}: Input should be a valid dictionary")
            custom_id = request.get("custom_id")
            if not isinstance(custom_id, str):
                raise bad(f"{where}.custom_id: Field required" if custom_id is None
                          else f"{where}.custom_id: Input should be a valid string")
            if len(custom_id) > 64:
                raise bad(f"{where}.custom_id: String should have at most 64 characters")
            if not CUSTOM_ID.match(custom_id):
                raise bad(f"{where}.custom_id: String should match pattern "
                          f"'{CUSTOM_ID.pattern}'")
            if custom_id in seen:
                raise bad(f"{where}.custom_id: Duplicate custom_id '{custom_id}': custom_id "
                          "must be unique within a Message Batch")
            seen.add(custom_id)
            params = request.get("params")
            if not isinstance(params, dict):
                raise bad(f"{where}.params: Field required" if params is None
                          else f"{where}.params: Input should be a valid dictionary")
            self._validate_params(params, f"{where}.params")
            checked.append({"custom_id": custom_id, "params": params})
        return checked

    @staticmethod
    def _validate_params(params: dict[str, Any], where: str) -> None:
        for key in ("model", "max_tokens", "messages"):
            if key not in params:
                raise AnthropicApiError(400, f"{where}.{key}: Field required")
        if not isinstance(params["model"], str) or not params["model"]:
            raise AnthropicApiError(400, f"{where}.model: Input should be a valid string")
        max_tokens = params["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise AnthropicApiError(400, f"{where}.max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise AnthropicApiError(400, f"{where}.max_tokens: Input should be greater than or "
                                    "equal to 1")
        messages = params["messages"]
        if not isinstance(messages, list):
            raise AnthropicApiError(400, f"{where}.messages: Input should be a valid list")
        if not messages:
            raise AnthropicApiError(400, f"{where}.messages: List should have at least 1 item "
                                    "after validation, not 0")
        temperature = params.get("temperature", 0)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
            raise AnthropicApiError(400, f"{where}.temperature: Input should be a number "
                                    "between 0 and 1")
        if params.get("stream"):
            raise AnthropicApiError(400, f"{where}.stream: streaming is not supported for "
                                    "batch requests")

    # -- reads and changes ------------------------------------------------------------------

    def get(self, batch_id: str, *, api: bool = False) -> MessageBatchRecord:
        """The batch, brought up to date; `api`: as the API answers (batch_not_found)."""
        record = self._lookup(batch_id, api=api)
        if record is None:
            raise AnthropicApiError(404, f"Message Batch {batch_id} not found")
        return record

    def listed(self) -> list[MessageBatchRecord]:
        """The list answer, newest first, without batches younger than list_lag_seconds."""
        return self._newest_first()

    def cancel(self, batch_id: str) -> MessageBatchRecord:
        with self.lock:
            record = self.get(batch_id, api=True)
            if record.status == "ended":
                raise AnthropicApiError(400, f"Message Batch {batch_id} has already ended "
                                        "and cannot be canceled")
            if record.cancel_at is None:
                record.cancel_at = self.clock()
                self.refresh(record)
            return record

    def delete(self, batch_id: str) -> dict[str, str]:
        with self.lock:
            record = self.get(batch_id, api=True)
            if record.status != "ended":
                raise AnthropicApiError(400, f"Message Batch {batch_id} cannot be deleted "
                                        "while it is still processing. Cancel it first.")
            self.deleted[batch_id] = self.batches.pop(batch_id)
            return {"id": batch_id, "type": "message_batch_deleted"}

    def results(self, batch_id: str) -> bytes:
        """The results download: JSONL, one line per request, shuffled."""
        with self.lock:
            record = self.get(batch_id)
            if record.ended is None or record.results is None:
                raise AnthropicApiError(400, f"Message Batch {batch_id} has not yet ended; "
                                        "its results are not available")
            if self._within(record.ended, self.results_not_found_seconds):
                raise AnthropicApiError(404, f"Results for Message Batch {batch_id} not found")
            return "".join(json.dumps(line) + "\n" for line in record.results).encode()

    # -- lifecycle --------------------------------------------------------------------------

    def _finish_time(self, b: MessageBatchRecord, request: dict[str, Any]) -> float:
        if request["_slow"]:
            return float("inf")
        n = max(len(b.requests), 1)
        index: int = request["_index"]
        return b.created + (index + 1) / n * self.in_progress_seconds

    def refresh(self, b: MessageBatchRecord) -> None:
        """End `b` if the clock says it has ended: the earliest of its natural end (every
        request finished), its cancel completing and its expiry."""
        if b.ended is not None:
            return
        now = self.clock()
        ends: list[tuple[float, float, str]] = []  # (end, cutoff, what the unfinished become)
        finished = max((self._finish_time(b, r) for r in b.requests), default=b.created)
        if b.cancel_at is None or finished <= b.cancel_at:
            ends.append((finished, finished, "canceled"))
        if b.cancel_at is not None:
            ends.append((b.cancel_at + self.canceling_seconds, b.cancel_at, "canceled"))
        expires = b.created + self.expiry_seconds
        ends.append((expires, expires, "expired"))
        end, cutoff, unfinished = min(ends, key=lambda e: e[0])
        if now >= end:
            self._finish(b, end, cutoff, unfinished)

    def _finish(self, b: MessageBatchRecord, at: float, cutoff: float,
                unfinished: str) -> None:
        results: list[dict[str, Any]] = []
        counts = dict.fromkeys(("processing", *RESULT_TYPES), 0)
        for request in b.requests:
            custom_id = request["custom_id"]
            if self._finish_time(b, request) <= cutoff:
                result = self._run(request["params"])
            else:
                result = {"type": unfinished}
            counts[result["type"]] += 1
            results.append({"custom_id": custom_id, "result": result})
            self.executions.append((b.id, custom_id, result["type"]))
        self.random.shuffle(results)
        b.results = results
        b.counts = counts
        b.ended = at

    def _run(self, params: dict[str, Any]) -> dict[str, Any]:
        text = last_user_text(params)
        fail = _FAIL.search(text)
        if fail:
            status = int(fail.group(1))
            return {"type": "errored", "error": {
                "type": "error", "error": {"type": error_type(status), "message":
                                           f"The request failed with HTTP {status}."},
                "request_id": new_request_id()}}
        reply = f"echo: {text}"
        usage: dict[str, Any] = {
            "input_tokens": estimate_tokens(params), "output_tokens": len(reply) // 4 + 1,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        exact = _USAGE.search(text)
        if exact:
            prompt, output, cache_read, cache_creation = (int(n) for n in exact.groups())
            usage = {"input_tokens": prompt, "output_tokens": output,
                     "cache_creation_input_tokens": cache_creation,
                     "cache_read_input_tokens": cache_read}
        usage["service_tier"] = "batch"
        return {"type": "succeeded", "message": {
            "id": f"msg_01{uuid.uuid4().hex[:22]}", "type": "message", "role": "assistant",
            "model": params.get("model"), "content": [{"type": "text", "text": reply}],
            "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}}

    # -- JSON -------------------------------------------------------------------------------

    def batch_json(self, b: MessageBatchRecord, results_url: str | None) -> dict[str, Any]:
        """The MessageBatch object; `results_url` is shown only once the batch has ended."""
        counts = b.counts if b.ended is not None else {
            "processing": len(b.requests), "succeeded": 0, "errored": 0, "canceled": 0,
            "expired": 0}
        return {
            "id": b.id, "type": "message_batch", "processing_status": b.status,
            "request_counts": dict(counts), "ended_at": rfc3339(b.ended),
            "created_at": rfc3339(b.created),
            "expires_at": rfc3339(b.created + self.expiry_seconds),
            "archived_at": None, "cancel_initiated_at": rfc3339(b.cancel_at),
            "results_url": results_url if b.ended is not None else None,
        }
