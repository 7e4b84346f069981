"""`tracker enqueue`: stream a JSONL file of items into the database, all or nothing.

Memory stays flat in the number of items: the file is read line by line and inserted in chunks
inside one transaction. Re-enqueueing an identical item is a no-op; the same id with another
payload, an id repeated within the file, or any bad line aborts the whole file.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tracker.config import TrackerConfig
from tracker.errors import InputError
from tracker.store.item_inserter import ItemInserter, ItemRow
from tracker.writer_thread import WriterThread

if TYPE_CHECKING:
    from sqlalchemy import Engine

MAX_LINE_BYTES = 1024 * 1024
#: The job of items enqueued without one (through the library, or before jobs existed).
DEFAULT_JOB = "default"
MAX_JOB_NAME = 200
CHUNK = 5_000

@dataclass(frozen=True)
class EnqueueResult:
    enqueued: int
    skipped: int


def estimate_tokens(payload_json: str) -> int:
    """A rough prompt-token estimate (4 bytes a token); no tokenizer download needed."""
    return len(payload_json) // 4 + 1


class _NonStandardNumber(str):
    """`NaN`, `Infinity`, or a number too large for a float: Python's parser takes them,
    strict JSON and the provider do not."""


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class _Marks(threading.local):
    """How many non-standard numbers this thread's parses have met."""

    count = 0


_marks = _Marks()


def _non_standard(text: str) -> _NonStandardNumber:
    _marks.count += 1
    return _NonStandardNumber(text)


def _finite(text: str) -> float | _NonStandardNumber:
    value = float(text)
    return value if math.isfinite(value) else _non_standard(text)


#: Made once: `json.loads` with hooks, or `json.dumps` with options, builds a new one per call
#: (a fifth of the time of parsing a short item).
_DECODER = json.JSONDecoder(parse_constant=_non_standard, parse_float=_finite)
_PAYLOAD_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
#: Metadata is the caller's: its keys stay in their order.
_METADATA_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _find(value: object, bad: Callable[[object], bool], path: str = "") -> tuple[str, str]:
    """The key path and text of the first value in a parsed record that is `bad`."""
    if bad(value):
        return path or "(top level)", str(value)
    children: list[tuple[str, object]] = []
    if isinstance(value, dict):
        children = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    for child_path, child in children:
        found = _find(child, bad, child_path)
        if found[0]:
            return found
    return "", ""


def _parse_line(
    raw: bytes, where: str, default_model: str | None, default_provider: str | None,
    accepts: dict[str, dict[str, ModelRule]],
) -> tuple[str, str, str, str, int, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not valid UTF-8 (byte {exc.start + 1})") from None
    if text.startswith("\ufeff"):  # what `json.loads` says; the decoder itself does not check
        raise InputError(f"{where}: not valid JSON (Unexpected UTF-8 BOM (decode using "
                         "utf-8-sig) at column 1)")
    marks = _marks.count
    try:
        record = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if _marks.count != marks:
        path, constant = _find(record, lambda v: isinstance(v, _NonStandardNumber))
        raise InputError(f"{where}: field '{path}': {constant} is not a finite number "
                         "(the provider refuses it)")
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    item_id = record.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise InputError(f"{where}: field 'id' must be a non-empty string")
    if _LONE_SURROGATE.search(item_id):
        raise InputError(f"{where}: field 'id': holds a lone UTF-16 surrogate, which is not text")
    payload = record.get("input_payload")
    if not isinstance(payload, dict):
        raise InputError(f"{where}: field 'input_payload' must be an object (id {item_id!r})")
    if payload.get("stream"):
        raise InputError(
            f"{where}: field 'input_payload.stream': streaming is not supported by batch APIs"
        )
    provider = record.get("provider") or default_provider
    if provider is None:
        raise InputError(f"{where}: no provider: give --provider or a \"provider\" field "
                         f"(configured: {', '.join(sorted(accepts))}; id {item_id!r})")
    if not isinstance(provider, str) or provider not in accepts:
        raise InputError(f"{where}: field 'provider': {provider!r} is not configured "
                         f"(configured: {', '.join(sorted(accepts))})")
    models = accepts[provider]
    model = record.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise InputError(f"{where}: no model: give --model or a \"model\" field (id {item_id!r})")
    if model not in models:
        raise InputError(
            f"{where}: field 'model': {model!r} is not configured for provider {provider!r} "
            f"(configured: {', '.join(sorted(models)) or 'none'})"
        )
    enabled, mode, needs_max_tokens = models[model]
    if not enabled:
        raise InputError(f"{where}: field 'model': {model!r} is not enabled in the config")
    _check_request(payload, mode, where, item_id)
    if needs_max_tokens and not any(key in payload for key in MAX_TOKENS_KEYS):
        raise InputError(f"{where}: field 'input_payload.max_tokens' is required by provider "
                         f"{provider!r} (or give model {model!r} a max_tokens in the config; "
                         f"id {item_id!r})")
    payload_json = _PAYLOAD_ENCODER.encode(payload)
    if not payload_json.isascii() and _LONE_SURROGATE.search(payload_json):
        path, _ = _find(payload, lambda v: isinstance(v, str) and bool(_LONE_SURROGATE.search(v)))
        raise InputError(f"{where}: field 'input_payload.{path}': holds a lone UTF-16 "
                         "surrogate (an escape like \\ud800 without its pair), which is not text")
    return (item_id, provider, model, payload_json, estimate_tokens(payload_json),
            _metadata(record, where))


def _metadata(record: dict[str, object], where: str) -> str | None:
    """The item's own `metadata` object as JSON text, its keys in the order given."""
    if "metadata" not in record or record["metadata"] is None:
        return None
    metadata = record["metadata"]
    if not isinstance(metadata, dict):
        raise InputError(f"{where}: field 'metadata' must be an object, got "
                         f"{type(metadata).__name__}")
    metadata_json = _METADATA_ENCODER.encode(metadata)
    if not metadata_json.isascii() and _LONE_SURROGATE.search(metadata_json):
        path, _ = _find(metadata,
                        lambda v: isinstance(v, str) and bool(_LONE_SURROGATE.search(v)))
        raise InputError(f"{where}: field 'metadata.{path}': holds a lone UTF-16 surrogate, "
                         "which is not text")
    return metadata_json


def _lines(stream: IO[bytes], name: str) -> Iterator[tuple[int, bytes]]:
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 2)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not (len(raw) <= MAX_LINE_BYTES + 1
                                               and raw.endswith(b"\n")):
            raise InputError(f"{name}:{number}: line is longer than 1 MB")
        if raw.strip():
            yield number, raw


def _check_request(payload: dict[str, object], mode: str, where: str, item_id: str) -> None:
    """The field the model's mode needs: chat `messages` (a non-empty list); embedding and
    responses `input`, completion `prompt` (a non-empty string or list)."""
    field = {"embedding": "input", "responses": "input", "completion": "prompt"}.get(
        mode, "messages")
    value = payload.get(field)
    if mode == "chat" and (not isinstance(value, list) or not value):
        raise InputError(
            f"{where}: field 'input_payload.messages' must be a non-empty list (id {item_id!r})"
        )
    if mode != "chat" and (not isinstance(value, str | list) or not value):
        raise InputError(f"{where}: field 'input_payload.{field}' must be a non-empty string "
                         f"or list for a {mode} model (id {item_id!r})")


#: The keys a request may give its output limit under (a provider that requires one).
MAX_TOKENS_KEYS = ("max_tokens", "max_completion_tokens")
#: What enqueue checks a line's model against: enabled, mode, must the line give max_tokens.
ModelRule = tuple[bool, str, bool]


def model_acceptance(config: TrackerConfig) -> dict[str, dict[str, ModelRule]]:
    """Per configured provider, its models: whether each may be used (provider enabled),
    its mode, and whether each request must give its max_tokens (the provider requires one
    and the model sets no default)."""
    return {name: _models_of(config, name) for name in config.providers}


def default_provider(config: TrackerConfig, given: str | None) -> str | None:
    """The provider of lines that name none: `given` (which must be configured), else
    `openai` when configured, else the only provider configured, else none (every line must
    name its own)."""
    if given is not None:
        config.provider(given)  # one clear error for a provider not in the config
        return given
    if "openai" in config.providers:
        return "openai"
    return next(iter(config.providers)) if len(config.providers) == 1 else None


def _models_of(config: TrackerConfig, provider: str) -> dict[str, ModelRule]:
    from tracker.providers import registry

    section = config.provider(provider)
    required = registry.traits(config.kind_of(provider)).requires_max_tokens
    return {m.name: (section.enabled, m.mode, required and m.max_tokens is None)
            for m in section.models}


def enqueue_stream(
    database: Engine | Path,
    stream: IO[bytes],
    name: str,
    config: TrackerConfig,
    *,
    provider: str | None = None,
    default_model: str | None = None,
    job: str = DEFAULT_JOB,
    budget_usd: Decimal | None = None,
    now: float,
) -> EnqueueResult:
    """Insert every item of `stream` into `job`, or none; raise `InputError` naming the line.
    `database`: an engine, or the path of an SQLite file that holds the newest schema.
    `budget_usd`: the job's spending limit from now on (in the same transaction)."""
    accepts = model_acceptance(config)
    provider = default_provider(config, provider)
    job = check_job_name(job)
    with ItemInserter(database) as inserter:
        result = _insert_all(inserter, stream, name, provider, default_model, accepts, job, now)
        if budget_usd is not None:
            inserter.set_job_budget(job, budget_usd, now)
        return result


#: Budgets are below this (and have at most 12 decimals): amounts stay plain decimals.
MAX_BUDGET = Decimal(10) ** 12


def check_budget(text: str, name: str = "--budget-usd") -> Decimal:
    """A budget as given on a command line: a non-negative decimal number of US dollars."""
    try:
        amount = Decimal(text)
    except ArithmeticError:
        amount = Decimal("NaN")
    if (not amount.is_finite() or amount < 0 or amount >= MAX_BUDGET
            or int(amount.as_tuple().exponent) < -12):
        raise InputError(f"{name} {text!r}: give a non-negative amount of US dollars below "
                         "a trillion, e.g. 25 or 12.50")
    return amount


def check_job_name(job: str) -> str:
    if not job.strip() or len(job) > MAX_JOB_NAME or not job.isprintable():
        raise InputError(f"job name {job!r}: give 1 to {MAX_JOB_NAME} printable characters")
    return job


def job_name_for(file: str) -> str:
    """The default job of `tracker enqueue FILE`: the file's name without its extension
    (`stdin` for `-`)."""
    return "stdin" if file == "-" else (Path(file).stem or Path(file).name)


def _insert_all(
    inserter: ItemInserter,
    stream: IO[bytes],
    name: str,
    provider: str | None,
    default_model: str | None,
    accepts: dict[str, dict[str, ModelRule]],
    job: str,
    now: float,
) -> EnqueueResult:
    # Every row of this run shares one created_at, strictly newer than any earlier run's, so
    # a conflict with a row of this same run is an id repeated within the file.
    latest = inserter.latest_created_at()
    stamp = now if latest is None or now > latest else latest + 1e-3
    seen = 0
    rows: list[ItemRow] = []
    numbers: list[int] = []
    def write(chunk: tuple[list[ItemRow], list[int]]) -> tuple[int, int]:
        return _insert_chunk(inserter, chunk[0], chunk[1], name, stamp)

    writer: WriterThread[tuple[list[ItemRow], list[int]], tuple[int, int]]
    with WriterThread(write, threaded=inserter.waits_for_server) as writer:
        for number, raw in _lines(stream, name):
            seen += 1
            item_id, line_provider, model, payload_json, tokens, metadata = _parse_line(
                raw, f"{name}:{number}", default_model, provider, accepts
            )
            rows.append((item_id, line_provider, model, payload_json, tokens, job, metadata, stamp,
                         stamp))
            numbers.append(number)
            if len(rows) >= CHUNK:
                writer.submit((rows, numbers))
                rows, numbers = [], []
        if rows:
            writer.submit((rows, numbers))
    if seen == 0:
        raise InputError(f"{name}: the file has no items")
    inserted = sum(added for added, _ in writer.results())
    skipped = sum(dupes for _, dupes in writer.results())
    return EnqueueResult(enqueued=inserted, skipped=skipped)


def _insert_chunk(
    inserter: ItemInserter,
    rows: list[ItemRow],
    numbers: list[int],
    name: str,
    stamp: float,
) -> tuple[int, int]:
    if inserter.insert_chunk(rows, stamp):
        return len(rows), 0
    inserted = skipped = 0
    for row, number in zip(rows, numbers, strict=True):
        if inserter.insert_one(row, stamp):
            inserted += 1
            continue
        existing = inserter.existing(row[0])
        if existing is None:
            raise InputError(f"{name}:{number}: cannot insert item {row[0]!r}")
        stored, created_at = existing
        if created_at == stamp:
            raise InputError(f"{name}:{number}: id {row[0]!r} appears more than once in the file")
        if stored != (row[1], row[2], row[3], row[5], row[6]):
            raise InputError(
                f"{name}:{number}: id {row[0]!r} is already enqueued with a different "
                "model, payload, job or metadata"
            )
        skipped += 1
    return inserted, skipped
