"""State of the fake Batch API: files, batches, validation and line execution.

Batch status is computed lazily from the clock whenever a batch is read, so tests that move a
manual clock see the same progression a real batch goes through, with no background thread:
validating -> in_progress -> finalizing -> completed, or failed (validation), expired (at the
completion window, finished lines delivered), cancelling -> cancelled (partial results).
Line i of n finishes at in_progress_at + (i + 1) / n * in_progress_seconds.

Eventual-consistency switches (all off by default; on the fake clock; settable live):
late_files_seconds: a terminal batch shows null output/error file ids for this long.
list_lag_seconds: the list omits batches created less than this long ago.
batch_not_found_seconds: retrieve and cancel answer 404 this long after creation (inf: always).
file_not_found_seconds: result files of file_not_found_kinds 404 on download this long.
cancel_refusal_status: not 409: cancelling an ended or cancelling batch answers this status.
Line markers beyond [fail:NNN], [fail-once:NNN], [slow], [invalid]:
[surrogate]: the reply's content ends with a lone UTF-16 surrogate (JSON escape \\ud800).
[batch-fail]: the whole batch fails validation with `errors: null` and no line runs.
[usage:P,C,K,R]: the line reports exactly P prompt tokens (K of them cached) and C completion
tokens (R of them reasoning), instead of figures estimated from its text.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracker.testing.fake_batch_store import BatchStore

ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions",
             "/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos")
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
TERMINAL = ("completed", "failed", "expired", "cancelled")
RESULT_KINDS = frozenset({"output", "error"})
_FAIL = re.compile(r"\[fail:(\d{3})\]")
_FAIL_ONCE = re.compile(r"\[fail-once:(\d{3})\]")
_USAGE = re.compile(r"\[usage:(\d+),(\d+),(\d+),(\d+)\]")

Responder = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


class ManualClock:
    """A clock that moves only when told; share one between the fake and the tracker."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.value = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.value += seconds


class ApiError(Exception):
    """An HTTP error answer: status and the OpenAI error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param,
                               "code": code}}


@dataclass
class FileRecord:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int
    kind: str | None = None  # "output" or "error" for a batch's result file
    created: float = 0.0  # the exact creation time on the clock

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.content),
                "created_at": self.created_at, "expires_at": None, "filename": self.filename,
                "purpose": self.purpose, "status": "processed", "status_details": None}


@dataclass
class BatchRecord:
    id: str
    seq: int
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    created: float
    status: str = "validating"
    lines: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    est_tokens: int = 0
    errors: list[dict[str, Any]] | None = None
    times: dict[str, float] = field(default_factory=dict)
    cancel_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0,
                                                            "failed": 0})
    usage: dict[str, Any] | None = None
    #: The input file's content when the batch was created (tests read it after the file
    #: itself is deleted).
    input_content: bytes | None = None


def estimate_tokens(body: dict[str, Any]) -> int:
    return len(json.dumps(body.get("messages", body.get("input", body.get("prompt", ""))))) // 4 + 1


def last_user_text(body: dict[str, Any]) -> str:
    """The text the markers are read from: the last chat message, else a completion's
    `prompt` or an embedding's or response's `input` (a list's strings joined)."""
    messages = body.get("messages") or []
    if not messages:
        other = body.get("input", body.get("prompt", ""))
        if isinstance(other, list):
            return " ".join(part if isinstance(part, str) else json.dumps(part)
                            for part in other)
        return str(other)
    content = messages[-1].get("content", "") if isinstance(messages[-1], dict) else ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def other_endpoint_body(endpoint: str, body: dict[str, Any], reply: str, prompt: int,
                        completion: int, cached: int, reasoning: int,
                        created: int) -> dict[str, Any]:
    """A successful body of /v1/embeddings, /v1/responses or /v1/completions (§3.2 shapes)."""
    if endpoint == "/v1/embeddings":
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        return {"object": "list", "model": body.get("model"),
                "data": [{"object": "embedding", "index": i,
                          "embedding": [round(0.001 * (i + k), 6) for k in range(8)]}
                         for i in range(count)],
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    if endpoint == "/v1/responses":
        return {"id": f"resp_{uuid.uuid4().hex[:24]}", "object": "response",
                "created_at": created, "status": "completed", "model": body.get("model"),
                "output": [{"type": "message", "id": f"msg_{uuid.uuid4().hex[:24]}",
                            "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "text": reply,
                                         "annotations": []}]}],
                "usage": {"input_tokens": prompt,
                          "input_tokens_details": {"cached_tokens": cached},
                          "output_tokens": completion,
                          "output_tokens_details": {"reasoning_tokens": reasoning},
                          "total_tokens": prompt + completion}}
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion",
            "created": created, "model": body.get("model"),
            "choices": [{"index": 0, "text": reply, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": cached},
                      "completion_tokens_details": {"reasoning_tokens": reasoning}}}


class FakeBatchState(BatchStore[BatchRecord]):
    """Everything the fake server remembers. Batch reads and changes take the lock; uploads,
    downloads and creates do not (each adds or reads one dict entry, atomic in CPython, and
    every walk over the dicts copies them first), so one batch running its lines, which can
    take seconds, does not hold up the others' files, as no real server would."""

    def __init__(self, *, clock: Callable[[], float], validating_seconds: float,
                 in_progress_seconds: float, finalizing_seconds: float,
                 cancelling_seconds: float, completion_window_seconds: float,
                 known_models: set[str] | None, enqueued_token_limit: int | None,
                 seed: int, late_files_seconds: float = 0.0, list_lag_seconds: float = 0.0,
                 batch_not_found_seconds: float = 0.0, file_not_found_seconds: float = 0.0,
                 file_not_found_kinds: frozenset[str] = RESULT_KINDS,
                 cancel_refusal_status: int = 409) -> None:
        super().__init__(clock=clock, seed=seed, list_lag_seconds=list_lag_seconds,
                         batch_not_found_seconds=batch_not_found_seconds)
        self.validating_seconds = validating_seconds
        self.in_progress_seconds = in_progress_seconds
        self.finalizing_seconds = finalizing_seconds
        self.cancelling_seconds = cancelling_seconds
        self.completion_window_seconds = completion_window_seconds
        self.known_models = known_models
        self.enqueued_token_limit = enqueued_token_limit
        # eventual-consistency switches, read live on every request
        self.late_files_seconds = late_files_seconds
        self.file_not_found_seconds = file_not_found_seconds
        self.file_not_found_kinds = file_not_found_kinds
        self.cancel_refusal_status = cancel_refusal_status
        self.files: dict[str, FileRecord] = {}
        self.responder: Responder | None = None
        self._failed_once: set[str] = set()

    # -- files ------------------------------------------------------------------------------

    def add_file(self, filename: str, purpose: str, content: bytes,
                 kind: str | None = None) -> FileRecord:
        now = self.clock()
        record = FileRecord(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, content,
                            int(now), kind, now)
        self.files[record.id] = record
        return record

    def upload(self, filename: str, purpose: str, content: bytes) -> FileRecord:
        if purpose not in UPLOAD_PURPOSES:
            raise ApiError(400, f"Invalid value: '{purpose}'.", param="purpose",
                           code="invalid_value")
        if purpose == "batch":
            first = content.split(b"\n", 1)[0]
            try:
                json.loads(first)
                valid = filename.endswith(".jsonl") and bool(content.strip())
            except ValueError:
                valid = False
            if not valid:
                raise ApiError(400, "Invalid file format for Batch API. Must be .jsonl")
        return self.add_file(filename, purpose, content)

    def get_file(self, file_id: str) -> FileRecord:
        record = self.files.get(file_id)
        if record is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return record

    def file_content(self, file_id: str) -> bytes:
        """The download answer; a result file may be missing for a while (the switch)."""
        record = self.get_file(file_id)
        if record.purpose == "batch_output" and record.kind in self.file_not_found_kinds \
                and self._within(record.created, self.file_not_found_seconds):
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return record.content

    # -- batches ----------------------------------------------------------------------------

    def create_batch(self, body: dict[str, Any]) -> BatchRecord:
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise ApiError(400, f"Invalid value: '{endpoint}'. Supported values are: "
                           + ", ".join(f"'{e}'" for e in ENDPOINTS), param="endpoint",
                           code="invalid_value")
        if body.get("completion_window") != "24h":
            raise ApiError(400, "Invalid value for 'completion_window': must be '24h'.",
                           param="completion_window", code="invalid_value")
        if not isinstance(body.get("input_file_id"), str):
            raise ApiError(400, "Missing required parameter: 'input_file_id'.",
                           param="input_file_id", code="missing_required_parameter")
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict) or len(metadata) > 16:
                raise ApiError(400, "Invalid 'metadata': at most 16 string pairs.",
                               param="metadata", code="invalid_value")
            for key, value in metadata.items():
                if not isinstance(value, str):
                    raise ApiError(400, f"Invalid type for 'metadata.{key}': expected a "
                                   f"string, but got {type(value).__name__} instead.",
                                   param=f"metadata.{key}", code="invalid_type")
        record = BatchRecord(f"batch_{uuid.uuid4().hex}", next(self._seq),
                             body["input_file_id"], endpoint, metadata, self.clock())
        source = self.files.get(body["input_file_id"])
        record.input_content = None if source is None else source.content
        self.batches[record.id] = record
        return record

    def get_batch(self, batch_id: str, *, api: bool = False) -> BatchRecord:
        """The batch, brought up to date; `api`: as the API answers (batch_not_found)."""
        record = self._lookup(batch_id, api=api)
        if record is None:
            raise ApiError(404, f"No such Batch object: {batch_id}", param="batch_id")
        return record

    def list_batches(self) -> list[BatchRecord]:
        """The list answer, newest first, without batches younger than list_lag_seconds."""
        return self._newest_first()

    def cancel(self, batch_id: str) -> BatchRecord:
        with self.lock:
            record = self.get_batch(batch_id, api=True)
            self._check_cancellable(record)
            if record.cancel_at is None and record.status != "cancelled":
                record.cancel_at = self.clock()
                record.times["cancelling_at"] = record.cancel_at
                self.refresh(record)
            return record

    def _check_cancellable(self, record: BatchRecord) -> None:
        refusal = self.cancel_refusal_status
        if refusal == 409 and record.status in ("completed", "failed", "expired"):
            raise ApiError(409, f"Cannot cancel a batch with status '{record.status}'.")
        if refusal != 409 and record.status in (*TERMINAL, "cancelling"):
            raise ApiError(refusal, f"Batch {record.id} cannot be cancelled: it is already "
                           f"{record.status}.")

    # -- lifecycle --------------------------------------------------------------------------

    def refresh(self, b: BatchRecord) -> None:
        """Move `b` to the status the clock says it has reached."""
        if b.status in TERMINAL:
            return
        now = self.clock()
        started = b.created + self.validating_seconds
        if b.cancel_at is not None:
            if b.cancel_at >= started and not b.lines and b.errors is None:
                self._validate(b)
            done = b.cancel_at + self.cancelling_seconds
            if now >= done:
                self._finish(b, "cancelled", cutoff=b.cancel_at, at=done)
            else:
                b.status = "cancelling"
            return
        if now < started:
            return
        if "in_progress_at" not in b.times:
            if not self._validate(b):
                self._terminal(b, "failed", started)
                return
            b.times["in_progress_at"] = started
        expires = b.created + self.completion_window_seconds
        run_end = started + self.in_progress_seconds
        slow = any(line.get("_slow") for line in b.lines)
        done = float("inf") if slow else run_end + self.finalizing_seconds
        if now >= done and done <= expires:
            b.times["finalizing_at"] = run_end
            self._finish(b, "completed", cutoff=float("inf"), at=done)
        elif now >= expires:
            self._finish(b, "expired", cutoff=expires, at=expires)
        elif now >= run_end:
            b.status = "finalizing"
            b.times["finalizing_at"] = run_end
        else:
            b.status = "in_progress"

    def _validate(self, b: BatchRecord) -> bool:
        errors: list[dict[str, Any]] = []
        source = self.files.get(b.input_file_id)
        if source is None or source.purpose != "batch":
            b.errors = [{"code": "invalid_request", "line": None, "param": "file_id",
                         "message": f"Cannot find file {b.input_file_id}, or organization "
                                    "does not have access to it."}]
            return False
        lines: list[dict[str, Any]] = []
        seen: set[str] = set()
        for number, raw in enumerate(source.content.splitlines(), start=1):
            if not raw.strip():
                continue
            error = self._check_line(raw, number, b.endpoint, seen, lines)
            if error:
                errors.append(error)
        b.model = lines[0]["body"].get("model") if lines else None
        b.est_tokens = sum(estimate_tokens(line["body"]) for line in lines)
        if not errors and any("[batch-fail]" in last_user_text(x["body"]) for x in lines):
            return False  # failed with `errors: null`, as the real API sometimes answers
        if not errors:
            errors.extend(self._token_limit_errors(b))
        if errors:
            b.errors = errors
            return False
        for index, line in enumerate(lines):
            line["_finish"] = index
        b.lines = lines
        b.counts["total"] = len(lines)
        return True

    def _token_limit_errors(self, b: BatchRecord) -> list[dict[str, Any]]:
        if self.enqueued_token_limit is None or not b.model:
            return []
        queued = sum(o.est_tokens for o in list(self.batches.values()) if o is not b
                     and o.model == b.model and o.status in ("in_progress", "finalizing"))
        if queued + b.est_tokens <= self.enqueued_token_limit:
            return []
        return [{"code": "token_limit_exceeded", "line": None, "param": None,
                 "message": f"Enqueued token limit reached for {b.model} in organization "
                            f"org-fake. Limit: {self.enqueued_token_limit:,} enqueued tokens. "
                            "Please try again once some in_progress batches have been "
                            "completed."}]

    def _check_line(self, raw: bytes, number: int, endpoint: str, seen: set[str],
                    lines: list[dict[str, Any]]) -> dict[str, Any] | None:
        def error(code: str, message: str, param: str | None = None) -> dict[str, Any]:
            return {"code": code, "line": number, "message": message, "param": param}

        try:
            line = json.loads(raw)
        except ValueError:
            return error("invalid_json_line", "This line is not parseable as valid JSON.")
        if not isinstance(line, dict):
            return error("invalid_json_line", "This line is not parseable as valid JSON.")
        for key in ("custom_id", "method", "url", "body"):
            if key not in line:
                return error("missing_required_parameter",
                             f"Missing required parameter: '{key}'.", key)
        if line["url"] != endpoint:
            return error("invalid_url", "The URL provided for this request does not match "
                         "the batch endpoint.", "url")
        body = line["body"]
        if not isinstance(body, dict):
            return error("invalid_request", "The body must be an object.", "body")
        if body.get("stream"):
            return error("streaming_unsupported", "Chat Completions: Streaming is not "
                         "supported in the Batch API.", "body.stream")
        if not body.get("model"):
            return error("invalid_request", "Model parameter is required.", "body.model")
        if self.known_models is not None and body["model"] not in self.known_models:
            return error("model_not_found", f"The provided model '{body['model']}' is not "
                         "supported by the Batch API.", "body.model")
        if line["custom_id"] in seen:
            return error("duplicate_custom_id", f"The custom_id '{line['custom_id']}' is "
                         "duplicated.", "custom_id")
        if "[invalid]" in last_user_text(body):
            return error("invalid_request", "The request body is invalid.", "body")
        seen.add(line["custom_id"])
        line["_slow"] = "[slow]" in last_user_text(body)
        lines.append(line)
        return None

    def _line_finish_time(self, b: BatchRecord, line: dict[str, Any]) -> float:
        if line.get("_slow"):
            return float("inf")
        n = max(len(b.lines), 1)
        started: float = b.times["in_progress_at"]
        finish: int = line["_finish"]
        return started + (finish + 1) / n * self.in_progress_seconds

    def _finish(self, b: BatchRecord, status: str, *, cutoff: float, at: float) -> None:
        """Run the lines finished by `cutoff`; the rest end as expired or cancelled."""
        outputs: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        usage: dict[str, Any] = {
            "input_tokens": 0, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 0}
        for line in b.lines:
            custom_id = line["custom_id"]
            started = "in_progress_at" in b.times
            if started and self._line_finish_time(b, line) <= cutoff:
                code, body = self._run(custom_id, line["body"], line["url"])
                entry = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id,
                         "response": {"status_code": code,
                                      "request_id": f"req_{uuid.uuid4().hex[:24]}",
                                      "body": body}, "error": None}
                if code < 400:
                    outputs.append(entry)
                    for key, src in (("input_tokens", "prompt_tokens"),
                                     ("output_tokens", "completion_tokens"),
                                     ("total_tokens", "total_tokens")):
                        usage[key] += body["usage"].get(src, 0)
                    details = body["usage"]
                    usage["input_tokens_details"]["cached_tokens"] += details.get(
                        "prompt_tokens_details", {}).get("cached_tokens", 0)
                    usage["output_tokens_details"]["reasoning_tokens"] += details.get(
                        "completion_tokens_details", {}).get("reasoning_tokens", 0)
                    self.executions.append((b.id, custom_id, "success"))
                else:
                    failures.append(entry)
                    self.executions.append((b.id, custom_id, f"http_{code}"))
            else:
                kind = "expired" if status == "expired" else "cancelled"
                message = ("This request could not be executed before the completion window "
                           "expired." if kind == "expired" else "This request was cancelled "
                           "before it was executed.")
                failures.append({"id": f"batch_req_{uuid.uuid4().hex[:24]}",
                                 "custom_id": custom_id, "response": None,
                                 "error": {"code": f"batch_{kind}", "message": message}})
                self.executions.append((b.id, custom_id, kind))
        self.random.shuffle(outputs)
        if outputs:
            b.output_file_id = self._result_file(b, "output", outputs)
        if failures:
            b.error_file_id = self._result_file(b, "error", failures)
        b.counts.update(completed=len(outputs), failed=len(failures))
        b.usage = usage
        self._terminal(b, status, at)

    def _result_file(self, b: BatchRecord, kind: str, lines: list[dict[str, Any]]) -> str:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return self.add_file(f"{b.id}_{kind}.jsonl", "batch_output", content, kind).id

    def _terminal(self, b: BatchRecord, status: str, at: float) -> None:
        b.status = status
        b.times[f"{status}_at"] = at

    def _run(self, custom_id: str, body: dict[str, Any],
             endpoint: str = "/v1/chat/completions") -> tuple[int, dict[str, Any]]:
        if self.responder is not None:
            return self.responder(custom_id, body)
        text = last_user_text(body)
        fail = _FAIL.search(text)
        once = _FAIL_ONCE.search(text)
        if once and custom_id not in self._failed_once:
            self._failed_once.add(custom_id)
            fail = once
        if fail:
            code = int(fail.group(1))
            return code, {"error": {
                "message": f"The server answered this request with HTTP {code}.",
                "type": "invalid_request_error" if code < 500 else "server_error",
                "param": None, "code": None}}
        reply = f"echo: {text}"
        if "[surrogate]" in text:
            reply += " \ud800"  # a lone surrogate: json.dumps writes it as the escape \ud800
        prompt = estimate_tokens(body)
        completion = len(reply) // 4 + 1
        cached = reasoning = 0
        exact = _USAGE.search(text)
        if exact:
            prompt, completion, cached, reasoning = (int(n) for n in exact.groups())
        if endpoint != "/v1/chat/completions":
            return 200, other_endpoint_body(endpoint, body, reply, prompt, completion,
                                            cached, reasoning, int(self.clock()))
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(self.clock()), "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply,
                                                 "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": reasoning,
                                                    "audio_tokens": 0}},
            "system_fingerprint": "fp_fake"}

    # -- JSON -------------------------------------------------------------------------------

    def _files_shown(self, b: BatchRecord) -> bool:
        """False while a terminal batch's result files are still late (late_files_seconds)."""
        ended = b.times.get(f"{b.status}_at") if b.status in TERMINAL else None
        return ended is None or not self._within(ended, self.late_files_seconds)

    def _counts(self, b: BatchRecord) -> dict[str, int]:
        """The request counts; while a batch runs, the lines finished by now (as a real
        batch's counts grow), estimated without walking the lines."""
        counts = dict(b.counts)
        started = b.times.get("in_progress_at")
        if b.status == "in_progress" and started is not None and self.in_progress_seconds > 0:
            share = (self.clock() - started) / self.in_progress_seconds
            counts["completed"] = max(0, min(counts["total"], int(share * counts["total"])))
        return counts

    def batch_json(self, b: BatchRecord, *, api: bool = True) -> dict[str, Any]:
        """The batch object; `api=False` shows the truth even while the files are late."""
        def ts(key: str) -> int | None:
            value = b.times.get(key)
            return int(value) if value is not None else None

        shown = not api or self._files_shown(b)
        created = int(b.created)
        return {
            "id": b.id, "object": "batch", "endpoint": b.endpoint, "model": b.model,
            "errors": None if b.errors is None else {"object": "list", "data": b.errors},
            "input_file_id": b.input_file_id, "completion_window": "24h", "status": b.status,
            "output_file_id": b.output_file_id if shown else None,
            "error_file_id": b.error_file_id if shown else None,
            "created_at": created, "in_progress_at": ts("in_progress_at"),
            "expires_at": created + 86400, "finalizing_at": ts("finalizing_at"),
            "completed_at": ts("completed_at"), "failed_at": ts("failed_at"),
            "expired_at": ts("expired_at"), "cancelling_at": ts("cancelling_at"),
            "cancelled_at": ts("cancelled_at"), "request_counts": self._counts(b),
            "usage": b.usage, "metadata": b.metadata,
        }
