"""`AnthropicBatchProvider`: the Anthropic Message Batches API (`/v1/messages/batches`).

Unlike OpenAI's, its requests go inline in the create call (no input file), its batches carry
no metadata and its creates take no idempotency key: the tracker creates with
`create_batch_inline` and, after a lost answer, looks for the batch by the provider's clock
(`provider_time`) and its request count. A custom id must match `^[a-zA-Z0-9_-]{1,64}$`, so an
item whose id does not is sent under a derived one (`wire_custom_id`).

The items are the seed's chat items (an OpenAI chat body); `chat_params` turns one into the
`params` of a Messages request.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx2

from tracker.providers.anthropic_errors import classify_anthropic_error
from tracker.providers.anthropic_results import count_result_lines, parse_result_line
from tracker.providers.base import (
    BaseBatchProvider,
    BatchTooLarge,
    InvalidItemError,
    NormalizedStatus,
    PermanentProviderError,
    PreparedBatch,
    ProviderBatch,
    RequestCounts,
    ResultsNotReady,
    SubmitResult,
    TransientProviderError,
    UploadedFile,
)
from tracker.providers.result_lines import CorruptResultLine, DownloadedResults

log = logging.getLogger(__name__)

ENDPOINTS = {"chat": "/v1/messages"}
#: "A Message Batch is limited to either 100,000 Message requests or 256 MB in size,
#: whichever is reached first."
MAX_LINES_PER_BATCH = 100_000
MAX_BYTES_PER_BATCH = 256 * 1024 * 1024
#: The batches one list page is asked for (the API allows 1 to 1000; 20 by default).
LIST_PAGE_SIZE = 100
#: The custom_id pattern of the API.
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_NOT_IN_CUSTOM_ID = re.compile(r"[^a-zA-Z0-9_-]")
#: A derived custom id: the item id's first characters, "-", this many hex digits of its hash.
_WIRE_PREFIX_CHARS = 39
_WIRE_HASH_CHARS = 24
#: The create body around the requests (`{"requests":[` and `]}`), in bytes.
_BODY_OVERHEAD = len(b'{"requests":[]}')

#: OpenAI chat parameters the Messages API has no counterpart for: an item that sets one
#: fails alone (sending it would refuse the whole batch, or silently do something else).
OPENAI_ONLY_PARAMS = (
    "logprobs", "top_logprobs", "response_format", "frequency_penalty", "presence_penalty",
    "seed", "logit_bias", "stream_options", "parallel_tool_calls", "modalities", "audio",
    "prediction", "store", "service_tier", "reasoning_effort",
)
_SYSTEM_ROLES = ("system", "developer")
#: Keys of the OpenAI body that `chat_params` translates itself (never passed through).
_TRANSLATED = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "stop",
                         "user", "n", "stream"})

_STATUS_MAP: dict[str, NormalizedStatus] = {
    "in_progress": NormalizedStatus.IN_PROGRESS,
    "canceling": NormalizedStatus.IN_PROGRESS,
}
#: Unknown statuses already logged (a list walk would otherwise log one for every batch).
_LOGGED_UNKNOWN: set[str] = set()


# -- pure parts ------------------------------------------------------------------------------


def wire_custom_id(item_id: str) -> str:
    """The custom id an item is sent under: its own id when the API takes it, else the id
    with every other character made "_", cut to 39 characters, then "-" and 24 hex digits of
    the id's SHA-256 (a pure function: a rebuilt batch sends the same ids)."""
    if CUSTOM_ID.fullmatch(item_id):
        return item_id
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()
    prefix = _NOT_IN_CUSTOM_ID.sub("_", item_id)[:_WIRE_PREFIX_CHARS]
    return f"{prefix}-{digest[:_WIRE_HASH_CHARS]}"


def normalize_status(processing_status: str, *, cancel_initiated: bool = False,
                     expired: int = 0) -> NormalizedStatus:
    """`ended` is cancelled when a cancel was initiated, failed when requests expired (their
    results are still fetched, as for OpenAI's `expired`), else completed; an unknown status
    is logged (once per process) and treated as still running."""
    if processing_status == "ended":
        if cancel_initiated:
            return NormalizedStatus.CANCELLED
        return NormalizedStatus.FAILED if expired > 0 else NormalizedStatus.COMPLETED
    mapped = _STATUS_MAP.get(processing_status)
    if mapped is None:
        if processing_status not in _LOGGED_UNKNOWN:
            _LOGGED_UNKNOWN.add(processing_status)
            log.warning("unknown Anthropic batch status %r; treating it as in_progress",
                        processing_status)
        return NormalizedStatus.IN_PROGRESS
    return mapped


def _epoch(value: Any) -> int | None:
    """Epoch seconds of an SDK datetime (or an RFC 3339 string, as the wire has it)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    timestamp = getattr(value, "timestamp", None)
    return int(timestamp()) if callable(timestamp) else None


def batch_status_from_anthropic(batch: Any) -> ProviderBatch:
    """Build a `ProviderBatch` from an SDK `MessageBatch` (missing or null fields tolerated)."""
    counts = getattr(batch, "request_counts", None)

    def count(name: str) -> int:
        return int(getattr(counts, name, 0) or 0)

    processing, succeeded, errored, canceled, expired = (
        count(name) for name in ("processing", "succeeded", "errored", "canceled", "expired"))
    status = str(batch.processing_status)
    return ProviderBatch(
        provider_batch_id=batch.id,
        provider_status=status,
        normalized_status=normalize_status(
            status, cancel_initiated=getattr(batch, "cancel_initiated_at", None) is not None,
            expired=expired),
        request_counts=RequestCounts(
            total=processing + succeeded + errored + canceled + expired,
            completed=succeeded,
            failed=errored + canceled + expired,
        ),
        created_at=_epoch(getattr(batch, "created_at", None)),
        known_status=status in _STATUS_MAP or status == "ended",
    )


def _system_blocks(content: Any, item_id: str) -> list[Any]:
    """A system message's content as a list of text blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        blocks: list[Any] = []
        for part in content:
            if isinstance(part, str):
                blocks.append({"type": "text", "text": part})
            elif isinstance(part, Mapping) and part.get("type", "text") == "text" and \
                    isinstance(part.get("text"), str):
                blocks.append({"type": "text", **part})
            else:
                raise InvalidItemError(
                    f"item {item_id!r}: a system message may hold only text", custom_id=item_id)
        return blocks
    raise InvalidItemError(f"item {item_id!r}: a system message's content must be a string or "
                           "a list of text parts", custom_id=item_id)


def _system(existing: Any, contents: list[Any], item_id: str) -> Any:
    """The request's `system`: the payload's own first, then the system and developer
    messages; one string joined by blank lines, or text blocks if any part is a list."""
    parts = ([existing] if existing is not None else []) + contents
    if all(isinstance(part, str) for part in parts):
        return "\n\n".join(parts)
    return [block for part in parts for block in _system_blocks(part, item_id)]


def chat_params(payload: Any, model: str, item_id: str,
                default_max_tokens: int | None = None) -> dict[str, Any]:
    """The `params` of a Messages request for a seed chat item (an OpenAI chat body).

    System and developer messages become `system`; `max_tokens` comes from `max_tokens`, else
    `max_completion_tokens`, else `default_max_tokens`; `stop` becomes `stop_sequences` and
    `user` `metadata.user_id`; `n` must be 1. Anthropic's own parameters pass through; an
    OpenAI-only one, `stream`, or a request the API would refuse raises `InvalidItemError`
    (the item fails alone: one bad request refuses a whole Message Batch)."""
    def invalid(message: str) -> InvalidItemError:
        return InvalidItemError(f"item {item_id!r}: {message}", custom_id=item_id)

    if not isinstance(payload, Mapping):
        raise invalid("input_payload must be an object")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("input_payload.messages must be a non-empty list")
    if payload.get("stream"):
        raise invalid("streaming is not supported in the Message Batches API")
    for name in OPENAI_ONLY_PARAMS:
        if name in payload:
            raise invalid(f"{name!r} is an OpenAI parameter the Anthropic Messages API does "
                          "not take; remove it")
    n = payload.get("n")
    if n is not None and n != 1:
        raise invalid(f"'n' is {n!r}: Anthropic returns one reply per request (send the item "
                      "n times instead)")
    system_contents: list[Any] = []
    kept: list[Any] = []
    for message in messages:
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise invalid("every message must be an object with a role")
        if message["role"] in _SYSTEM_ROLES:
            system_contents.append(message.get("content"))
        else:
            kept.append(message)
    if not kept:
        raise invalid("input_payload.messages holds no user or assistant message")
    max_tokens = payload.get("max_tokens")
    if max_tokens is None:
        max_tokens = payload.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = default_max_tokens
    if max_tokens is None:
        raise invalid("needs max_tokens: set it on the item or max_tokens on the model in "
                      "the config")
    if type(max_tokens) is not int or max_tokens < 1:
        raise invalid(f"max_tokens must be a whole number of at least 1, not {max_tokens!r}")

    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    params.update((key, value) for key, value in payload.items() if key not in _TRANSLATED)
    params["messages"] = kept
    if system_contents:
        params["system"] = _system(payload.get("system"), system_contents, item_id)
    stop = payload.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise invalid("'stop' must be a string or a list of strings")
        params["stop_sequences"] = [*params.get("stop_sequences", []), *stop]
    user = payload.get("user")
    if user is not None:
        metadata = params.get("metadata")
        params["metadata"] = {"user_id": user, **(metadata if isinstance(metadata, Mapping)
                                                  else {})}
    return params


# -- results ---------------------------------------------------------------------------------


# -- the provider ----------------------------------------------------------------------------


class AnthropicBatchProvider(BaseBatchProvider):
    """The Message Batches API. `config` keys: `api_key` (else `api_key_env` or
    `ANTHROPIC_API_KEY`), `base_url` (else the SDK's `ANTHROPIC_BASE_URL` or its default),
    `models` (list of `{name, mode, max_tokens, ...}`; `max_tokens` is sent with a request
    that sets none), `max_retries` (for reads; default 2), `timeout` (seconds; default 120).
    """

    name = "anthropic"
    api_key_env = "ANTHROPIC_API_KEY"
    endpoints = ENDPOINTS
    max_lines_per_batch = MAX_LINES_PER_BATCH
    max_bytes_per_batch = MAX_BYTES_PER_BATCH
    max_batches_per_hour = None
    list_page_size = LIST_PAGE_SIZE
    takes_stored_payloads = False
    sends_requests_inline = True
    has_batch_metadata = False
    requires_max_tokens = True

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        key_env = config.get("api_key_env") or self.api_key_env or "ANTHROPIC_API_KEY"
        self._api_key = config.get("api_key") or os.environ.get(key_env)
        if not self._api_key:
            raise PermanentProviderError(
                f"no Anthropic API key: set {key_env} or give api_key in the provider config",
                code="missing_api_key",
            )
        self._models: dict[str, Mapping[str, Any]] = {
            m["name"]: m for m in config.get("models") or [] if m.get("name")
        }
        self._client = anthropic.Anthropic(
            api_key=self._api_key,
            base_url=config.get("base_url") or None,
            max_retries=int(config.get("max_retries", 2)),
            timeout=float(config.get("timeout", 120.0)),
            # The SDK's own client (its limits, proxies from the environment), which also tells
            # the daemon's metrics of every answer, retries included.
            http_client=anthropic.DefaultHttpxClient(event_hooks={"response": [self._answered]}),
        )
        # Create and cancel are never retried by the SDK: a retried create can make a second
        # paid batch (there is no idempotency key), and a refused cancel is an answer.
        self._once = self._client.with_options(max_retries=0)

    def wire_custom_id(self, item_id: str) -> str:
        return wire_custom_id(item_id)

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
        default_max_tokens = self._models.get(model, {}).get("max_tokens")
        fd, name = tempfile.mkstemp(prefix="batch-", suffix=".jsonl", dir=directory)
        path = Path(name)
        custom_ids: list[str] = []
        seen_items: set[str] = set()
        seen_wire: set[str] = set()
        size = _BODY_OVERHEAD
        try:
            with os.fdopen(fd, "wb") as out:
                for position, item in enumerate(items, start=1):
                    item_id = item.get("id")
                    if not isinstance(item_id, str) or not item_id:
                        raise PermanentProviderError(
                            f"item {position}: 'id' must be a non-empty string")
                    if item_id in seen_items:
                        raise PermanentProviderError(
                            f"item {position}: duplicate id {item_id!r} in batch")
                    seen_items.add(item_id)
                    custom_id = wire_custom_id(item_id)
                    if custom_id in seen_wire:
                        raise InvalidItemError(
                            f"item {item_id!r}: its custom id {custom_id!r} is already used "
                            "by another item of the batch", custom_id=item_id)
                    line = self._jsonl_line(item_id, custom_id, item.get("input_payload"),
                                            model, default_max_tokens)
                    if len(custom_ids) + 1 > self.max_lines_per_batch:
                        raise BatchTooLarge(
                            f"a Message Batch holds at most {self.max_lines_per_batch} requests",
                            fits=len(custom_ids))
                    # Each request and its comma in the create body (the newline stands in
                    # for the comma).
                    if size + len(line) > self.max_bytes_per_batch:
                        raise BatchTooLarge(
                            f"a Message Batch is at most {self.max_bytes_per_batch} bytes",
                            fits=len(custom_ids))
                    size += len(line)
                    seen_wire.add(custom_id)
                    custom_ids.append(custom_id)
                    out.write(line)
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

    def create_batch_inline(self, prepared: PreparedBatch) -> ProviderBatch:
        requests: list[Any] = []
        with prepared.jsonl_path.open("rb") as fh:
            requests.extend(json.loads(line) for line in fh if line.strip())
        try:
            batch = self._once.messages.batches.create(requests=requests)
        except Exception as exc:
            error = self._error(exc)
            raise one_request_refused(error, prepared.custom_ids) or error from exc
        return batch_status_from_anthropic(batch)

    def submit(self, prepared: PreparedBatch) -> SubmitResult:
        status = self.create_batch_inline(prepared)
        return SubmitResult(provider_batch_id=status.provider_batch_id, input_file_id="",
                            status=status)

    def poll_status(self, provider_batch_id: str) -> ProviderBatch:
        return batch_status_from_anthropic(self._retrieve(provider_batch_id))

    def cancel(self, provider_batch_id: str) -> ProviderBatch:
        try:
            return batch_status_from_anthropic(
                self._once.messages.batches.cancel(provider_batch_id))
        except Exception as exc:
            refused = self._error(exc)
            if not (isinstance(exc, anthropic.APIStatusError) and exc.status_code in (400, 409)):
                raise refused from exc
        # Refused (the fake and the API answer 400 for a batch that has ended): its current
        # state is the answer. A refusal of a batch still running is raised as it came.
        status = self.poll_status(provider_batch_id)
        if status.provider_status not in ("ended", "canceling"):
            raise refused
        return status

    def cancel_acknowledged(self, provider_status: str | None) -> bool:
        """Only `canceling`: `ended` says nothing of a cancel (an ended batch that was
        cancelled is normalized to CANCELLED, and a cancel sent to an ended batch is
        answered with its status)."""
        return provider_status == "canceling"

    def failed_validation(self, provider_status: str | None) -> bool:
        """A Message Batch is validated in its create call: it never fails as a whole later."""
        return False

    def fetch_results(
        self,
        provider_batch_id: str,
        *,
        expected_custom_ids: Iterable[str] | None = None,
        directory: Path | None = None,
        skip_unavailable: bool = False,
        last_seen: ProviderBatch | None = None,
    ) -> DownloadedResults:
        """`last_seen` is not used: the results URL is read from the batch each time."""
        try:
            batch = self._retrieve(provider_batch_id)
        except PermanentProviderError as exc:
            if exc.status_code == 404 and skip_unavailable and directory is not None:
                return self._kept_results(provider_batch_id, directory, expected_custom_ids)
            raise
        status = batch_status_from_anthropic(batch)
        if status.provider_status != "ended":
            raise TransientProviderError(
                f"batch {provider_batch_id} is {status.provider_status}; results come when it "
                "ends", code="not_finished")
        keep = directory is not None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix=f"{provider_batch_id}-"))
        else:
            directory.mkdir(parents=True, exist_ok=True)
        try:
            file = self._verified_file(directory, provider_batch_id,
                                       getattr(batch, "results_url", None),
                                       status.request_counts.total, skip_unavailable)
        except BaseException:
            if not keep:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        return DownloadedResults(status, directory, [file] if file else [], expected_custom_ids,
                                 parse_result_line, remove_directory=not keep,
                                 lenient=skip_unavailable)

    # -- the finer steps of submit ----------------------------------------------------------

    def upload_input(self, prepared: PreparedBatch) -> UploadedFile:
        raise NotImplementedError(
            "Anthropic Message Batches take their requests inline: use create_batch_inline")

    def create_batch(
        self, input_file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> ProviderBatch:
        raise NotImplementedError(
            "Anthropic Message Batches take their requests inline, not an input file: use "
            "create_batch_inline")

    def find_batches_by_metadata(
        self, key: str, value: str, *, created_after: int | None = None
    ) -> list[ProviderBatch]:
        """Message Batches carry no metadata: nothing is found this way (the tracker matches
        batches by the provider's clock and their request counts instead)."""
        return []

    def list_batches(self) -> Iterator[ProviderBatch]:
        try:
            for batch in self._client.messages.batches.list(limit=LIST_PAGE_SIZE):
                yield batch_status_from_anthropic(batch)
        except Exception as exc:
            raise self._error(exc) from exc

    def provider_time(self) -> int | None:
        """The `Date` header of a one-batch list call (read-only)."""
        try:
            response = self._client.messages.batches.with_raw_response.list(limit=1)
        except Exception as exc:
            raise self._error(exc) from exc
        return parse_http_date(response.headers.get("date"))

    # -- helpers ----------------------------------------------------------------------------

    def _check_model(self, model: str, mode: str) -> str:
        if mode not in ENDPOINTS:
            raise PermanentProviderError(
                f"mode {mode!r} is not supported by Anthropic Message Batches (supported: "
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
            configured = self._models[model].get("mode", "chat")
            if configured != mode:
                raise PermanentProviderError(
                    f"model {model!r} is configured for mode {configured!r}, not {mode!r}",
                    code="unsupported_mode",
                )
        return ENDPOINTS[mode]

    @staticmethod
    def _jsonl_line(item_id: str, custom_id: str, payload: Any, model: str,
                    default_max_tokens: int | None) -> bytes:
        params = chat_params(payload, model, item_id, default_max_tokens)
        try:
            encoded = json.dumps({"custom_id": custom_id, "params": params}, ensure_ascii=False,
                                 separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidItemError(f"item {item_id!r}: input_payload is not valid JSON ({exc})",
                                   custom_id=item_id) from None
        return (encoded + "\n").encode("utf-8", "surrogatepass")

    def _retrieve(self, provider_batch_id: str) -> Any:
        try:
            return self._client.messages.batches.retrieve(provider_batch_id)
        except Exception as exc:
            raise self._error(exc) from exc

    @staticmethod
    def _kept_results(provider_batch_id: str, directory: Path,
                      expected_custom_ids: Iterable[str] | None) -> DownloadedResults:
        """The batch is gone (404) for good: the file verified before it went is what there
        is; every other line counts as missing."""
        file = directory / f"results-{provider_batch_id}.jsonl"
        status = ProviderBatch(provider_batch_id=provider_batch_id, provider_status="not_found",
                               normalized_status=NormalizedStatus.FAILED, known_status=False)
        return DownloadedResults(status, directory, [file] if file.exists() else [],
                                 expected_custom_ids, parse_result_line,
                                 remove_directory=False, lenient=True)

    def _verified_file(self, directory: Path, provider_batch_id: str, results_url: str | None,
                       expected: int, skip_unavailable: bool) -> Path | None:
        """The downloaded and checked results file (reused when an earlier call verified it),
        or None when there is none to be had; `ResultsNotReady` while it is not downloadable
        whole."""
        path = directory / f"results-{provider_batch_id}.jsonl"
        if path.exists():
            return path
        if not results_url:
            if skip_unavailable:
                return None
            raise ResultsNotReady(f"batch {provider_batch_id} has ended but names no results "
                                  "URL yet", code="results_not_ready")
        partial = directory / f"results-{provider_batch_id}.partial"
        try:
            self._download(provider_batch_id, partial)
        except PermanentProviderError as exc:
            partial.unlink(missing_ok=True)
            if exc.status_code != 404:
                raise
            if skip_unavailable:
                return None
            raise ResultsNotReady(f"the results of {provider_batch_id} are not found yet (404)",
                                  status_code=404, code="results_not_found") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        try:
            lines = count_result_lines(partial, skip_corrupt=skip_unavailable)
        except CorruptResultLine as exc:
            partial.unlink(missing_ok=True)
            raise ResultsNotReady(f"the results download of {provider_batch_id} is corrupt "
                                  f"({exc}); will download again",
                                  code="corrupt_download") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if lines < expected and not skip_unavailable:
            partial.unlink(missing_ok=True)
            raise ResultsNotReady(
                f"the results download of {provider_batch_id} has {lines} lines, the batch "
                f"counts {expected}; will download again", code="short_download")
        partial.rename(path)
        return path

    def _download(self, provider_batch_id: str, path: Path) -> None:
        try:
            with self._client.messages.batches.with_streaming_response.results(
                    provider_batch_id) as response, path.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        except (httpx2.HTTPError, anthropic.AnthropicError) as exc:
            raise self._error(exc) from exc

    def _answered(self, response: httpx2.Response) -> None:
        self.observe_call(response.request.method, response.request.url.path,
                          str(response.status_code))

    def _error(self, exc: BaseException) -> Exception:
        request = getattr(exc, "request", None)
        if isinstance(exc, anthropic.APIConnectionError) and request is not None:
            # No answer came (the SDK's retries used up): the one call the hook cannot see.
            self.observe_call(request.method, request.url.path, "connection_error")
        return classify_anthropic_error(exc, api_key=self._api_key)


#: Where a refused create names the one request at fault: "requests.12.params.max_tokens: ...".
_REQUEST_AT = re.compile(r"\brequests\.(\d+)\.")


def one_request_refused(error: Exception, custom_ids: tuple[str, ...]) -> Exception | None:
    """A create refused with a 400 that names one request: that request's error (its item
    fails alone and the batch is sent without it), else None."""
    if not isinstance(error, PermanentProviderError) or error.status_code != 400:
        return None
    found = _REQUEST_AT.search(error.message)
    if found is None or int(found.group(1)) >= len(custom_ids):
        return None
    return InvalidItemError(error.message, custom_id=custom_ids[int(found.group(1))],
                            status_code=400)


def parse_http_date(value: str | None) -> int | None:
    """Epoch seconds of an HTTP `Date` header; None if absent or unparseable."""
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
