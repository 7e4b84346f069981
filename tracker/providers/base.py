"""The provider interface and the values it exchanges.

Providers know nothing of the database: they take plain values and return frozen dataclasses.
The five methods of the seed (`prepare_payloads`, `submit`, `poll_status`, `fetch_results`,
`cancel`) are the whole public surface; `upload_input`, `create_batch` and
`find_batches_by_metadata` are the finer steps `submit` is made of, exposed so the tracker can
record each step's result before the next one (the crash-safe submit protocol).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

#: `error_code` of a request that appears in neither result file (retried: nothing was paid).
MISSING_RESULT_CODE = "missing_result"


class NormalizedStatus(StrEnum):
    """A provider batch status, mapped onto the seed's internal vocabulary."""

    SUBMITTED = "submitted"  #: accepted, being validated
    IN_PROGRESS = "in_progress"  #: running, finalizing, cancelling, or a status we do not know
    COMPLETED = "completed"  #: finished; results ready
    FAILED = "failed"  #: validation failed, or expired (an expired batch may have results)
    CANCELLED = "cancelled"  #: cancelled; may have partial results

    @property
    def is_terminal(self) -> bool:
        return self in (NormalizedStatus.COMPLETED, NormalizedStatus.FAILED,
                        NormalizedStatus.CANCELLED)


class ProviderError(Exception):
    """Base of the provider error classes."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code


class TransientProviderError(ProviderError):
    """Worth retrying later: rate limits, timeouts, 5xx, dropped connections.

    `retry_after` is the provider's hint in seconds (None when it gave none).
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Retrying the same request cannot succeed: bad key, bad request, unknown model, 404."""


class InvalidItemError(PermanentProviderError):
    """One item cannot be sent as it is (raised by `prepare_payloads`): it fails alone, and the
    batch is built again without it."""

    def __init__(self, message: str, *, custom_id: str, status_code: int | None = None) -> None:
        super().__init__(message, code="invalid_item", status_code=status_code)
        self.custom_id = custom_id


class BatchTooLarge(PermanentProviderError):
    """The items do not fit in one provider batch (raised by `prepare_payloads`); the first
    `fits` of them do, so the rest go back to the queue."""

    def __init__(self, message: str, *, fits: int) -> None:
        super().__init__(message, code="batch_too_large")
        self.fits = fits


class ResultsNotReady(TransientProviderError):
    """The batch ended but a result file cannot be downloaded yet: its counts promise lines
    that no file named by the batch holds, or the file answers 404. Providers are eventually
    consistent, so this is a delay; after a grace period the caller fetches again with
    `skip_unavailable=True` and the lines of the missing file count as missing."""


class StoredPayload(Mapping[str, Any]):
    """An item's payload as the tracker stored it: JSON text that enqueue wrote after checking
    it (an object with the field its model's mode needs, no `stream`, only finite numbers). Reads
    as a mapping, parsed on first use; a provider may copy `json_text` into its request line
    as it is instead of parsing and encoding it again."""

    __slots__ = ("json_text", "_parsed")

    def __init__(self, json_text: str) -> None:
        self.json_text = json_text
        self._parsed: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = json.loads(self.json_text)
        return self._parsed

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


@dataclass(frozen=True)
class UploadedFile:
    """An uploaded input file; `created_at` is by the provider's clock (reconcile uses it)."""

    file_id: str
    created_at: int | None = None


@dataclass(frozen=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class BatchError:
    """One batch-level validation error; `line` is 1-based, or None for the whole batch."""

    code: str | None
    message: str | None
    param: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class PreparedBatch:
    """A batch ready to upload: the JSONL lives in a file, never whole in memory."""

    model: str
    mode: str
    endpoint: str
    jsonl_path: Path
    custom_ids: tuple[str, ...]
    byte_size: int
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def line_count(self) -> int:
        return len(self.custom_ids)


@dataclass(frozen=True)
class ProviderBatch:
    """What the provider says about one of its batches at one moment (a snapshot; the
    tracker's own batch status is `tracker.states.BatchStatus`)."""

    provider_batch_id: str
    provider_status: str
    normalized_status: NormalizedStatus
    request_counts: RequestCounts = RequestCounts()
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[BatchError, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: int | None = None
    model: str | None = None
    #: False when the provider's status is not in the mapping (treated as in_progress).
    known_status: bool = True

    @property
    def is_terminal(self) -> bool:
        return self.normalized_status.is_terminal


@dataclass(frozen=True)
class SubmitResult:
    provider_batch_id: str
    input_file_id: str
    status: ProviderBatch


@dataclass(frozen=True)
class ProviderResultRow:
    """One request's outcome, from the output file, the error file, or neither (missing).

    The first six fields are the seed's; `status_code` and `error_code` say why a line failed
    (`status_code` None for non-HTTP failures such as `batch_expired`); the token counts are
    the provider's usage figures for a successful line, read by the provider (each API names
    them its own way).
    """

    custom_id: str
    output_text: str | None = None
    output_data: dict[str, Any] | None = None
    raw_metadata: dict[str, Any] | None = None
    error_message: str | None = None
    is_success: bool = False
    status_code: int | None = None
    error_code: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    #: Of `prompt_tokens`, those read from the provider's prompt cache (billed lower).
    cached_tokens: int | None = None
    #: Of `completion_tokens`, those spent on reasoning (billed as output, already counted).
    reasoning_tokens: int | None = None
    #: The provider's result line as it came (JSON text), stored once as `output_data`
    #: instead of a re-serialized copy of `output_data`.
    raw_line: str | None = None


def missing_result_row(custom_id: str) -> ProviderResultRow:
    """A request that appears in neither result file (treated as transient upstream)."""
    return ProviderResultRow(
        custom_id=custom_id,
        error_message="the batch returned no line for this request in its output or error file",
        is_success=False,
        error_code=MISSING_RESULT_CODE,
    )


#: Path segments kept in an endpoint's name; any other (an id) becomes `{id}`.
_ROUTE_WORDS = frozenset({"v1", "batches", "files", "content", "cancel", "chat", "completions",
                          "embeddings", "responses", "messages", "results"})


def endpoint_name(method: str, path: str) -> str:
    """`POST /v1/batches/{id}/cancel` for `POST /v1/batches/batch_abc/cancel`: one name per
    route, not per batch (a metric label must not grow with the data)."""
    parts = [part if part in _ROUTE_WORDS else "{id}"
             for part in path.strip("/").split("/") if part]
    return f"{method} /{'/'.join(parts)}"


class BaseBatchProvider(ABC):
    """What the tracker needs from a batch API."""

    name: str = "base"
    #: Per-batch limits; an instance may lower them (tests do).
    max_lines_per_batch: int = 50_000
    max_bytes_per_batch: int = 200 * 1024 * 1024
    #: The environment variable the API key is read from when the config names none.
    api_key_env: str | None = None
    #: Batches the provider lets one account create per hour (None: no such limit).
    max_batches_per_hour: int | None = None
    #: The metadata key each provider batch carries the tracker's local batch id under
    #: (reconcile and the duplicate sweep search by it).
    metadata_key: str = "tracker_batch_id"
    #: mode (a model's `mode` in the config) -> the endpoint its requests go to; the first is
    #: the default for a mode the provider does not list (`prepare_payloads` refuses it).
    endpoints: Mapping[str, str] = {}
    #: How many batches one page of `list_batches` holds (one call each).
    list_page_size: int = 100
    #: Whether `prepare_payloads` takes payloads as `StoredPayload` (JSON text it may copy);
    #: otherwise each `input_payload` is a plain dict.
    takes_stored_payloads: bool = False
    #: Whether the requests go inline in the create call (no input file): the tracker then
    #: skips `upload_input` and calls `create_batch_inline` with the prepared batch.
    sends_requests_inline: bool = False
    #: Whether provider batches carry the tracker's metadata: when False, reconcile after a
    #: lost create finds candidates by the provider's clock and the request count instead.
    has_batch_metadata: bool = True
    #: Whether every request must give its output limit (`max_tokens`): enqueue refuses a
    #: line without one unless its model sets a default.
    requires_max_tokens: bool = False
    #: Told of every HTTP call: `(endpoint, outcome)`, e.g. `("POST /v1/files", "200")` or
    #: `(..., "connection_error")`; set by the daemon for its metrics.
    call_observer: Callable[[str, str], None] | None = None

    def observe_call(self, method: str, path: str, outcome: str) -> None:
        if self.call_observer is not None:
            self.call_observer(endpoint_name(method, path), outcome)

    @classmethod
    def endpoint_for(cls, mode: str) -> str:
        """The endpoint a batch of `mode` requests is created for (known without a client)."""
        return cls.endpoints.get(mode) or next(iter(cls.endpoints.values()), "")

    def wire_custom_id(self, item_id: str) -> str:
        """The `custom_id` an item is sent under. A pure function of the item id, so a
        rebuilt batch sends the same ids; the tracker stores every one that differs from the
        item id and joins result lines back by it."""
        return item_id

    def provider_time(self) -> int | None:
        """The provider's clock now (epoch seconds), by a read-only call, for a provider whose
        creates leave no earlier trace (no upload) to search from after a lost answer. None
        when the provider gives no time (the tracker then uses its own clock, with slack)."""
        return None

    def create_batch_inline(self, prepared: PreparedBatch) -> ProviderBatch:
        """Create the batch with the requests of `prepared` in the call itself (only for a
        provider with `sends_requests_inline`). Sent once, never retried by the client; not
        idempotent, like `create_batch`."""
        raise NotImplementedError(f"{self.name} uploads an input file first")

    def missing_result(self, custom_id: str) -> ProviderResultRow:
        """The row for a request that no result file holds (the tracker sends it again)."""
        return missing_result_row(custom_id)

    @abstractmethod
    def prepare_payloads(
        self,
        items: Iterable[Mapping[str, Any]],
        model: str,
        mode: str,
        *,
        metadata: Mapping[str, str] | None = None,
        directory: Path | None = None,
    ) -> PreparedBatch:
        """Write the provider's input file for `items` (each `{"id", "input_payload"}`), in
        the order given (line n is the n-th item). Local only, no network; safe to repeat.

        Raises `InvalidItemError` naming the one item it cannot send, `BatchTooLarge` saying
        how many items fit, `PermanentProviderError` for a model or mode it does not serve."""

    @abstractmethod
    def submit(self, prepared: PreparedBatch) -> SubmitResult:
        """Upload the input file and create the batch (the seed's one-call submit). Not safe
        to repeat: a lost answer may hide a batch; the tracker uses `upload_input`,
        `create_batch` and `find_batches_by_metadata` instead, recording each step."""

    @abstractmethod
    def poll_status(self, provider_batch_id: str) -> ProviderBatch:
        """Read the batch's status now. Read-only, safe to repeat. Raises
        `PermanentProviderError` with `status_code` 404 when the provider does not know the
        batch (right after a create it may not yet), `TransientProviderError` to try later."""

    @abstractmethod
    def fetch_results(
        self,
        provider_batch_id: str,
        *,
        expected_custom_ids: Iterable[str] | None = None,
        directory: Path | None = None,
        skip_unavailable: bool = False,
        last_seen: ProviderBatch | None = None,
    ) -> FetchedResults:
        """Download and parse the output and error files of a terminal batch.

        `last_seen` is the batch's status as the tracker last stored it: a provider may use
        its file ids instead of reading the batch again when they are all its counts promise.

        Raises `ResultsNotReady` while a file is promised but not downloadable (unless
        `skip_unavailable`), `TransientProviderError` for a cut-off or short download.
        With `directory`, each verified file is kept there and reused by the next call, so only
        a bad file is downloaded again; the caller removes the directory. Rows come output file
        first, then error file, then one row per expected id found in neither. Idempotent.
        """

    @abstractmethod
    def cancel(self, provider_batch_id: str) -> ProviderBatch:
        """Ask the provider to cancel the batch. A provider that refuses because the batch has
        ended may raise `PermanentProviderError` (the caller then reads the status)."""

    def delete_file(self, file_id: str) -> None:
        """Delete one of the provider's files (a batch's input file, or a result file the
        tracker has stored). Safe to repeat: a file already gone raises
        `PermanentProviderError` with `status_code` 404, which the caller counts as deleted.
        A provider whose batches use no files has nothing to delete (this default)."""
        return None

    def failed_validation(self, provider_status: str | None) -> bool:
        """Whether the provider status says the batch was refused as a whole before it ran
        (its batch-level errors say why), rather than expired or cancelled."""
        return provider_status == "failed"

    def cancel_acknowledged(self, provider_status: str | None) -> bool:
        """Whether the provider status shows a cancel already taken (no need to send again)."""
        return provider_status in ("cancelling", "cancelled")

    @abstractmethod
    def upload_input(self, prepared: PreparedBatch) -> UploadedFile:
        """Upload the JSONL; return the file's id and provider-side creation time. Repeating
        it uploads another file (harmless: a file is not a batch)."""

    @abstractmethod
    def create_batch(
        self, input_file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> ProviderBatch:
        """Create the batch once, with no client-side retry (a retry could create two). Not
        idempotent: after an error without a 4xx status the batch may exist; find it with
        `find_batches_by_metadata` before creating again."""

    def list_batches(self) -> Iterator[ProviderBatch]:
        """The provider's batches, newest first, fetched a page at a time as the caller
        iterates (each page one call; stop iterating to stop calling). Read-only; a batch
        created moments ago may be missing (lists lag) and a listed status may be a little
        behind a read of the batch itself. A provider that cannot list shows nothing, so every
        batch is read on its own."""
        return iter(())

    @abstractmethod
    def find_batches_by_metadata(
        self, key: str, value: str, *, created_after: int | None = None
    ) -> list[ProviderBatch]:
        """Provider batches whose metadata[key] == value, newest first, created at or after
        `created_after` (the provider's clock). Read-only; a batch created moments ago may be
        missing (lists lag)."""


class FetchedResults(ABC):
    """Parsed results of one batch, read lazily from files on disk; iterate to get rows."""

    status: ProviderBatch

    @abstractmethod
    def __iter__(self) -> Iterator[ProviderResultRow]: ...

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @abstractmethod
    def close(self) -> None:
        """Remove the downloaded files."""

    def __enter__(self) -> FetchedResults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
