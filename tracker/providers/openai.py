"""`OpenAIBatchProvider`: the seed's provider, on the OpenAI Files and Batch APIs."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx2
import openai

from tracker.providers.base import (
    BaseBatchProvider,
    BatchError,
    BatchTooLarge,
    InvalidItemError,
    NormalizedStatus,
    PermanentProviderError,
    PreparedBatch,
    ProviderBatch,
    RequestCounts,
    ResultsNotReady,
    StoredPayload,
    SubmitResult,
    TransientProviderError,
    UploadedFile,
)
from tracker.providers.openai_errors import classify_openai_error
from tracker.providers.openai_results import count_result_lines, parse_result_line
from tracker.providers.result_lines import CorruptResultLine, DownloadedResults

log = logging.getLogger(__name__)

#: The seed's status table, plus `cancelling` (still running until it ends).
STATUS_MAP: dict[str, NormalizedStatus] = {
    "validating": NormalizedStatus.SUBMITTED,
    "in_progress": NormalizedStatus.IN_PROGRESS,
    "finalizing": NormalizedStatus.IN_PROGRESS,
    "completed": NormalizedStatus.COMPLETED,
    "failed": NormalizedStatus.FAILED,
    "expired": NormalizedStatus.FAILED,
    "cancelled": NormalizedStatus.CANCELLED,
    "cancelling": NormalizedStatus.IN_PROGRESS,
}

ENDPOINTS = {"chat": "/v1/chat/completions", "embedding": "/v1/embeddings",
             "responses": "/v1/responses", "completion": "/v1/completions"}
#: The field each mode's request must carry (chat: a non-empty list).
REQUIRED_FIELD = {"chat": "messages", "embedding": "input", "responses": "input",
                  "completion": "prompt"}
#: "A single batch may include up to 50,000 embedding inputs across all requests."
MAX_EMBEDDING_INPUTS = 50_000
MAX_LINES_PER_BATCH = 50_000
#: The most batches one page of `GET /v1/batches` returns.
LIST_PAGE_SIZE = 100
MAX_BYTES_PER_BATCH = 200 * 1024 * 1024
#: With no model list in the config, the seed's families and their variants are accepted
#: for chat (the seed's list is of chat models; other modes take any model name).
SEED_MODEL_FAMILIES = re.compile(
    r"^(gpt-3\.5-turbo|gpt-4o|gpt-4(\.\d+)?|gpt-5(\.\d+)?)(-[A-Za-z0-9.\-]+)?$"
)


#: Unknown statuses already logged: a list walk reads every batch of the account each cycle,
#: and one new status would otherwise be logged for each of them, every cycle.
_LOGGED_UNKNOWN: set[str] = set()


def normalize_status(provider_status: str) -> NormalizedStatus:
    """The seed's mapping; an unknown status is logged (once per process) and treated as
    still running."""
    mapped = STATUS_MAP.get(provider_status)
    if mapped is None:
        if provider_status not in _LOGGED_UNKNOWN:
            _LOGGED_UNKNOWN.add(provider_status)
            log.warning("unknown OpenAI batch status %r; treating it as in_progress",
                        provider_status)
        return NormalizedStatus.IN_PROGRESS
    return mapped


def batch_status_from_openai(batch: Any) -> ProviderBatch:
    """Build a `ProviderBatch` from an SDK `Batch` (missing or null fields tolerated)."""
    counts = getattr(batch, "request_counts", None)
    errors_obj = getattr(batch, "errors", None)
    errors = tuple(
        BatchError(code=e.code, message=e.message, param=e.param, line=e.line)
        for e in (getattr(errors_obj, "data", None) or [])
    )
    return ProviderBatch(
        provider_batch_id=batch.id,
        provider_status=str(batch.status),
        normalized_status=normalize_status(str(batch.status)),
        request_counts=RequestCounts(
            total=getattr(counts, "total", 0) or 0,
            completed=getattr(counts, "completed", 0) or 0,
            failed=getattr(counts, "failed", 0) or 0,
        ),
        input_file_id=getattr(batch, "input_file_id", None),
        output_file_id=getattr(batch, "output_file_id", None),
        error_file_id=getattr(batch, "error_file_id", None),
        errors=errors,
        metadata=dict(getattr(batch, "metadata", None) or {}),
        created_at=getattr(batch, "created_at", None),
        model=getattr(batch, "model", None),
        known_status=str(batch.status) in STATUS_MAP,
    )


#: Keys a stored payload's text must not hold to be copied into a request line as it is (the
#: line's own `model` wins; `stream` is refused); a non-finite number must be refused too.
_NOT_COPIED = ('"model"', '"stream"', "NaN", "Infinity")


def _copyable(json_text: str) -> bool:
    """Whether a payload stored by enqueue can go into the request body as it is. False
    (the payload is parsed and checked instead) whenever in doubt: a string that merely
    contains one of the words costs only the slower path."""
    return (json_text.startswith("{") and json_text.endswith("}") and json_text != "{}"
            and not any(word in json_text for word in _NOT_COPIED))


def embedding_inputs(payload: Any) -> int:
    """How many inputs an embedding request holds: one for a string or one list of token
    ids, else the list's length (strings, or lists of token ids)."""
    value = payload.get("input") if isinstance(payload, Mapping) else None
    if not isinstance(value, list) or not value or isinstance(value[0], int):
        return 1
    return len(value)


def _line_around(custom_id: str, endpoint: str, model: str, json_text: str) -> bytes:
    """The request line, with the payload's JSON text copied into the body after `model`."""
    return (f'{{"custom_id":{json.dumps(custom_id, ensure_ascii=False)},"method":"POST",'
            f'"url":{json.dumps(endpoint)},"body":{{"model":{json.dumps(model)},'
            f'{json_text[1:]}}}\n').encode()


class OpenAIBatchProvider(BaseBatchProvider):
    """The seed's provider. `config` keys: `api_key` (else `api_key_env` or `OPENAI_API_KEY`),
    `base_url` (else `OPENAI_BASE_URL`), `models` (list of `{name, mode, ...}`), `max_retries`
    (for reads and uploads; default 2), `timeout` (seconds; default 120), `organization`,
    `project`.
    """

    name = "openai"
    api_key_env = "OPENAI_API_KEY"
    endpoints = ENDPOINTS
    #: "You can create up to 2,000 batches per hour."
    max_batches_per_hour = 2000
    list_page_size = LIST_PAGE_SIZE
    takes_stored_payloads = True

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        key_env = config.get("api_key_env") or "OPENAI_API_KEY"
        self._api_key = config.get("api_key") or os.environ.get(key_env)
        if not self._api_key:
            raise PermanentProviderError(
                f"no OpenAI API key: set {key_env} or give api_key in the provider config",
                code="missing_api_key",
            )
        self._models = {
            m["name"]: m.get("mode", "chat") for m in config.get("models") or [] if m.get("name")
        }
        self._client = openai.OpenAI(
            api_key=self._api_key,
            base_url=config.get("base_url") or None,
            organization=config.get("organization"),
            project=config.get("project"),
            max_retries=int(config.get("max_retries", 2)),
            timeout=float(config.get("timeout", 120.0)),
            # The SDK's own client (its limits, proxies from the environment), which also tells
            # the daemon's metrics of every answer, retries included.
            http_client=openai.DefaultHttpxClient(event_hooks={"response": [self._answered]}),
        )
        # Create and cancel are never retried by the SDK: a retried create can make a second
        # paid batch, and a 409 on cancel is an answer, not a lock timeout.
        self._once = self._client.with_options(max_retries=0)

    # -- the seed's interface -------------------------------------------------------------

    def prepare_payloads(
        self,
        items: Iterable[Mapping[str, Any]],
        model: str,
        mode: str,
        *,
        metadata: Mapping[str, str] | None = None,
        directory: Path | None = None,
    ) -> PreparedBatch:
        endpoint = self._check_model(model, mode)
        fd, name = tempfile.mkstemp(prefix="batch-", suffix=".jsonl", dir=directory)
        path = Path(name)
        custom_ids: list[str] = []
        seen: set[str] = set()
        size = inputs = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for position, item in enumerate(items, start=1):
                    line = self._jsonl_line(item, position, model, endpoint, seen, mode)
                    size += len(line[1])
                    if mode == "embedding":
                        inputs += embedding_inputs(item.get("input_payload"))
                        if inputs > MAX_EMBEDDING_INPUTS:  # fits=0: the first alone is too big
                            raise BatchTooLarge(
                                f"a batch holds at most {MAX_EMBEDDING_INPUTS} embedding "
                                "inputs", fits=len(custom_ids))
                    if len(custom_ids) + 1 > self.max_lines_per_batch:
                        raise BatchTooLarge(
                            f"a batch holds at most {self.max_lines_per_batch} requests",
                            fits=len(custom_ids))
                    if size > self.max_bytes_per_batch:
                        raise BatchTooLarge(
                            f"a batch input file is at most {self.max_bytes_per_batch} bytes",
                            fits=len(custom_ids))
                    custom_ids.append(line[0])
                    out.write(line[1])
            if not custom_ids:
                raise PermanentProviderError("a batch needs at least one item")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return PreparedBatch(
            model=model,
            mode=mode,
            endpoint=endpoint,
            jsonl_path=path,
            custom_ids=tuple(custom_ids),
            byte_size=size,
            metadata=dict(metadata or {}),
        )

    def submit(self, prepared: PreparedBatch) -> SubmitResult:
        input_file_id = self.upload_input(prepared).file_id
        status = self.create_batch(input_file_id, prepared.endpoint, prepared.metadata)
        return SubmitResult(
            provider_batch_id=status.provider_batch_id,
            input_file_id=input_file_id,
            status=status,
        )

    def poll_status(self, provider_batch_id: str) -> ProviderBatch:
        try:
            return batch_status_from_openai(self._client.batches.retrieve(provider_batch_id))
        except Exception as exc:
            raise self._error(exc) from exc

    def fetch_results(
        self,
        provider_batch_id: str,
        *,
        expected_custom_ids: Iterable[str] | None = None,
        directory: Path | None = None,
        skip_unavailable: bool = False,
        last_seen: ProviderBatch | None = None,
    ) -> DownloadedResults:
        try:
            status = (last_seen if last_seen is not None and self._has_its_files(last_seen)
                      else self.poll_status(provider_batch_id))
        except PermanentProviderError as exc:
            if exc.status_code == 404 and skip_unavailable and directory is not None:
                return self._kept_results(provider_batch_id, directory, expected_custom_ids)
            raise
        if not status.is_terminal:
            raise TransientProviderError(
                f"batch {provider_batch_id} is {status.provider_status}; results come when it ends",
                code="not_finished",
            )
        keep = directory is not None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix=f"{provider_batch_id}-"))
        else:
            directory.mkdir(parents=True, exist_ok=True)
        try:
            files = [path for kind, file_id, expected in self._result_files(status)
                     if (path := self._verified_file(directory, kind, file_id, expected,
                                                     skip_unavailable)) is not None]
        except BaseException:
            if not keep:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        return DownloadedResults(status, directory, files, expected_custom_ids,
                                 parse_result_line, remove_directory=not keep,
                                 lenient=skip_unavailable)

    @classmethod
    def _has_its_files(cls, status: ProviderBatch) -> bool:
        """A completed batch's status that names a file for every line its counts promise
        (files can come after the status does; an expired or cancelled batch may name its
        error file later than its counts: those are read again)."""
        return status.normalized_status is NormalizedStatus.COMPLETED and all(
            file_id is not None or expected == 0
            for _kind, file_id, expected in cls._result_files(status)) and bool(
            status.output_file_id or status.error_file_id)

    @staticmethod
    def _kept_results(provider_batch_id: str, directory: Path,
                      expected_custom_ids: Iterable[str] | None) -> DownloadedResults:
        """The batch is gone (404) for good: the files verified before it went are what there
        is; every other line counts as missing."""
        files = [path for kind in ("output", "error")
                 for path in sorted(directory.glob(f"{kind}-*.jsonl"))]
        status = ProviderBatch(provider_batch_id=provider_batch_id, provider_status="not_found",
                             normalized_status=NormalizedStatus.FAILED, known_status=False)
        return DownloadedResults(status, directory, files, expected_custom_ids,
                                 parse_result_line, remove_directory=False, lenient=True)

    @staticmethod
    def _result_files(status: ProviderBatch) -> list[tuple[str, str | None, int]]:
        """`(kind, file id or None, lines the counts promise)` for the output and error files.
        A completed batch with requests but no counts and no files promises its output."""
        counts = status.request_counts
        output_expected = counts.completed
        if (status.provider_status == "completed" and counts.total and not counts.completed
                and not counts.failed and not status.output_file_id
                and not status.error_file_id):
            output_expected = counts.total
        return [("output", status.output_file_id, output_expected),
                ("error", status.error_file_id, counts.failed)]

    def _verified_file(self, directory: Path, kind: str, file_id: str | None, expected: int,
                       skip_unavailable: bool) -> Path | None:
        """The downloaded and checked file (reused when an earlier call verified it), or None
        when there is none; `ResultsNotReady` while one is promised but not downloadable."""
        if not file_id:
            if expected > 0 and not skip_unavailable:
                raise ResultsNotReady(
                    f"the batch counts {expected} {kind} line(s) but names no {kind} file yet",
                    code="files_not_ready")
            return None
        path = directory / f"{kind}-{file_id}.jsonl"
        if path.exists():
            return path
        partial = directory / f"{kind}-{file_id}.partial"
        try:
            self._download(file_id, partial)
        except PermanentProviderError as exc:
            if exc.status_code != 404:
                raise
            if skip_unavailable:
                return None
            raise ResultsNotReady(f"{kind} file {file_id} is not found yet (404)",
                                  status_code=404, code="file_not_found") from exc
        try:
            self._check_download(partial, file_id, expected, lenient=skip_unavailable)
        except ResultsNotReady:
            partial.unlink(missing_ok=True)
            if skip_unavailable:
                return None  # still corrupt after the grace period: its lines count as missing
            raise
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.rename(path)
        return path

    def cancel(self, provider_batch_id: str) -> ProviderBatch:
        try:
            return batch_status_from_openai(self._once.batches.cancel(provider_batch_id))
        except openai.ConflictError:
            # Already ended (completed, failed or expired): its current state is the answer.
            return self.poll_status(provider_batch_id)
        except Exception as exc:
            raise self._error(exc) from exc

    def delete_file(self, file_id: str) -> None:
        try:
            self._client.files.delete(file_id)
        except Exception as exc:
            raise self._error(exc) from exc

    # -- the finer steps of submit ----------------------------------------------------------

    def upload_input(self, prepared: PreparedBatch) -> UploadedFile:
        filename = f"{prepared.metadata.get('tracker_batch_id') or uuid.uuid4().hex}.jsonl"
        try:
            with prepared.jsonl_path.open("rb") as fh:
                uploaded = self._client.files.create(
                    file=(filename, fh, "application/jsonl"), purpose="batch"
                )
        except Exception as exc:
            raise self._error(exc) from exc
        return UploadedFile(file_id=uploaded.id, created_at=getattr(uploaded, "created_at", None))

    def create_batch(
        self, input_file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> ProviderBatch:
        try:
            batch = self._once.batches.create(
                input_file_id=input_file_id,
                endpoint=endpoint,  # type: ignore[arg-type]
                completion_window="24h",
                metadata=dict(metadata) or None,
            )
        except Exception as exc:
            raise self._error(exc) from exc
        return batch_status_from_openai(batch)

    def find_batches_by_metadata(
        self, key: str, value: str, *, created_after: int | None = None
    ) -> list[ProviderBatch]:
        found: list[ProviderBatch] = []
        for batch in self.list_batches():
            if created_after is not None and (batch.created_at or 0) < created_after:
                break  # newest first: everything further is older
            if batch.metadata.get(key) == value:
                found.append(batch)
        return found

    def list_batches(self) -> Iterator[ProviderBatch]:
        try:
            for batch in self._client.batches.list(limit=LIST_PAGE_SIZE):
                yield batch_status_from_openai(batch)
        except Exception as exc:
            raise self._error(exc) from exc

    # -- helpers ----------------------------------------------------------------------------

    def _check_model(self, model: str, mode: str) -> str:
        if mode not in ENDPOINTS:
            raise PermanentProviderError(
                f"mode {mode!r} is not supported for batches (supported: "
                f"{', '.join(ENDPOINTS)})",
                code="unsupported_mode",
            )
        if self._models:
            if model not in self._models:
                raise PermanentProviderError(
                    f"model {model!r} is not configured for this provider "
                    f"(configured: {', '.join(sorted(self._models))})",
                    code="unsupported_model",
                )
            if self._models[model] != mode:
                raise PermanentProviderError(
                    f"model {model!r} is configured for mode {self._models[model]!r}, not {mode!r}",
                    code="unsupported_mode",
                )
        elif mode == "chat" and not SEED_MODEL_FAMILIES.match(model):
            raise PermanentProviderError(
                f"model {model!r} is not a supported OpenAI chat model "
                "(gpt-3.5-turbo, gpt-4, gpt-4o, gpt-5 and their variants)",
                code="unsupported_model",
            )
        return ENDPOINTS[mode]

    @staticmethod
    def _jsonl_line(
        item: Mapping[str, Any], position: int, model: str, endpoint: str, seen: set[str],
        mode: str = "chat",
    ) -> tuple[str, bytes]:
        custom_id = item.get("id")
        if not isinstance(custom_id, str) or not custom_id:
            raise PermanentProviderError(f"item {position}: 'id' must be a non-empty string")
        if custom_id in seen:
            raise PermanentProviderError(f"item {position}: duplicate id {custom_id!r} in batch")
        seen.add(custom_id)
        payload = item.get("input_payload")
        field = REQUIRED_FIELD.get(mode, "messages")
        if (isinstance(payload, StoredPayload) and _copyable(payload.json_text)
                and f'"{field}"' in payload.json_text):  # else checked below, parsed
            return custom_id, _line_around(custom_id, endpoint, model, payload.json_text)
        if not isinstance(payload, Mapping) or not isinstance(
                payload.get(field), list if mode == "chat" else (list, str)):
            raise InvalidItemError(
                f"item {custom_id!r}: input_payload.{field} must be "
                f"{'a list' if mode == 'chat' else 'a string or a list'}",
                custom_id=custom_id)
        if payload.get("stream"):
            raise InvalidItemError(
                f"item {custom_id!r}: streaming is not supported in the Batch API",
                custom_id=custom_id)
        body = {"model": model, **{k: v for k, v in payload.items() if k != "model"}}
        line = {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}
        try:
            encoded = json.dumps(line, ensure_ascii=False, separators=(",", ":"),
                                 allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise InvalidItemError(
                f"item {custom_id!r}: input_payload is not valid JSON ({exc})",
                custom_id=custom_id) from None
        return custom_id, encoded.encode("utf-8")

    def _download(self, file_id: str, path: Path) -> None:
        try:
            with self._client.files.with_streaming_response.content(file_id) as response:
                response.stream_to_file(path)
        except (httpx2.HTTPError, openai.APIError) as exc:
            raise self._error(exc) from exc

    @staticmethod
    def _check_download(path: Path, file_id: str, expected: int, *, lenient: bool) -> None:
        """A cut-off or short file must never be taken as the batch's final results (the counts
        of a terminal batch are final). `lenient` (after the grace period) accepts a short one."""
        try:
            lines = count_result_lines(path)
        except CorruptResultLine as exc:
            raise ResultsNotReady(
                f"download of {file_id} is corrupt ({exc}); will download again",
                code="corrupt_download",
            ) from exc
        if lines < expected and not lenient:
            raise ResultsNotReady(
                f"download of {file_id} has {lines} lines, the batch reports {expected}; "
                "will download again",
                code="short_download",
            )

    def _answered(self, response: httpx2.Response) -> None:
        self.observe_call(response.request.method, response.request.url.path,
                          str(response.status_code))

    def _error(self, exc: BaseException) -> Exception:
        request = getattr(exc, "request", None)
        if isinstance(exc, openai.APIConnectionError) and request is not None:
            # No answer came (the SDK's retries used up): the one call the hook cannot see.
            self.observe_call(request.method, request.url.path, "connection_error")
        return classify_openai_error(exc, api_key=self._api_key)
