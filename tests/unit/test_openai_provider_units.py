"""The OpenAI provider's pure parts: status mapping, JSONL, error classification, result lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tracker.providers.base import (
    InvalidItemError,
    NormalizedStatus,
    PermanentProviderError,
    StoredPayload,
    TransientProviderError,
    missing_result_row,
)
from tracker.providers.openai import OpenAIBatchProvider, normalize_status
from tracker.providers.openai_errors import classify_openai_error, parse_retry_after
from tracker.providers.openai_results import (
    CorruptResultLine,
    parse_result_line,
    read_result_file,
)

CLOSED_PORT = "http://127.0.0.1:9/v1"  # nothing listens: any network call would fail


@pytest.mark.parametrize(
    "provider_status,expected",
    [
        ("validating", "submitted"),  # seed row 1
        ("in_progress", "in_progress"),  # seed row 2
        ("finalizing", "in_progress"),  # seed row 3
        ("completed", "completed"),  # seed row 4
        ("failed", "failed"),  # seed row 5
        ("expired", "failed"),  # seed row 6: expired is failed, results still fetchable
        ("cancelled", "cancelled"),  # seed row 7
        ("cancelling", "in_progress"),  # not in the seed: still running until it ends
    ],
)
def test_normalize_status__seed_table(provider_status: str, expected: str) -> None:
    assert normalize_status(provider_status) == NormalizedStatus(expected)


def test_normalize_status__unknown_is_logged_once_not_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # e.g. three batches of one list page, or three poll cycles
            assert normalize_status("status_of_this_test") is NormalizedStatus.IN_PROGRESS
    assert caplog.text.count("status_of_this_test") == 1


# -- JSONL -----------------------------------------------------------------------------------


def _provider(**config: Any) -> OpenAIBatchProvider:
    return OpenAIBatchProvider({"api_key": "sk-test-0123456789", "base_url": CLOSED_PORT,
                                **config})


ITEMS = [
    {"id": "request-1", "input_payload": {"messages": [{"role": "user", "content": "What is AI?"}],
                                          "max_tokens": 100}},
    {"id": "request-2", "input_payload": {"messages": [{"role": "user", "content": "Quantum?"}],
                                          "max_tokens": 150, "temperature": 0.7}},
]


def test_prepare_payloads__seed_jsonl_shape(tmp_path: Path) -> None:
    prepared = _provider().prepare_payloads(ITEMS, "gpt-4", "chat", directory=tmp_path,
                                            metadata={"tracker_batch_id": "tb_1"})
    lines = [json.loads(line) for line in prepared.jsonl_path.read_text().splitlines()]
    assert lines[0] == {"custom_id": "request-1", "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {"model": "gpt-4", "messages": [
                            {"role": "user", "content": "What is AI?"}], "max_tokens": 100}}
    assert lines[1]["body"]["temperature"] == 0.7
    assert prepared.custom_ids == ("request-1", "request-2")
    assert prepared.endpoint == "/v1/chat/completions"
    assert prepared.byte_size == prepared.jsonl_path.stat().st_size
    assert prepared.metadata == {"tracker_batch_id": "tb_1"}


@pytest.mark.parametrize(
    "items,match",
    [
        ([ITEMS[0], ITEMS[0]], "duplicate id"),  # custom_id must be unique per batch
        ([{"id": "", "input_payload": ITEMS[0]["input_payload"]}], "'id'"),
        ([{"id": "x", "input_payload": {"messages": "hi"}}], "messages"),
        ([{"id": "x", "input_payload": {"messages": [], "stream": True}}], "streaming"),
        ([], "at least one item"),
        ([{"id": "x", "input_payload": {"messages": [], "temperature": float("nan")}}],
         "not valid JSON"),  # NaN would fail the whole batch at the provider
    ],
)
def test_prepare_payloads__refused_before_upload(tmp_path: Path, items: list[Any],
                                                 match: str) -> None:
    with pytest.raises(PermanentProviderError, match=match):
        _provider().prepare_payloads(items, "gpt-4", "chat", directory=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written stays behind


STORED = [
    {"messages": [{"role": "user", "content": "héllo \u2603"}], "max_tokens": 5},
    {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}],
     "temperature": 0.5, "response_format": {"type": "json_object"}},
    {"messages": [{"role": "user", "content": "the item's own model"}], "model": "gpt-4"},
]


def test_prepare_payloads__stored_payload_copied_as_is__same_bytes_as_parsed(
        tmp_path: Path) -> None:
    def as_stored(payload: dict[str, Any]) -> str:  # what enqueue writes
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    parsed = [{"id": f"i{n}", "input_payload": p} for n, p in enumerate(STORED)]
    stored = [{"id": f"i{n}", "input_payload": StoredPayload(as_stored(p))}
              for n, p in enumerate(STORED)]
    sorted_parsed = [{"id": i["id"], "input_payload": json.loads(as_stored(i["input_payload"]))}
                     for i in parsed]
    made = [_provider().prepare_payloads(items, "gpt-4o", "chat", directory=tmp_path)
            for items in (sorted_parsed, stored)]
    assert made[0].jsonl_path.read_bytes() == made[1].jsonl_path.read_bytes()
    lines = [json.loads(line) for line in made[1].jsonl_path.read_text().splitlines()]
    assert [line["body"]["model"] for line in lines] == ["gpt-4o"] * 3  # the batch's model wins


def test_prepare_payloads__stored_payload_with_a_non_finite_number__refused_alone(
        tmp_path: Path) -> None:
    items = [{"id": "bad", "input_payload": StoredPayload(
        '{"messages":[{"content":"x","role":"user"}],"temperature":NaN}')}]
    with pytest.raises(InvalidItemError):
        _provider().prepare_payloads(items, "gpt-4o", "chat", directory=tmp_path)


def test_prepare_payloads__modes_and_their_endpoints(tmp_path: Path) -> None:
    with pytest.raises(PermanentProviderError, match="mode 'images' is not supported"):
        _provider().prepare_payloads(ITEMS, "gpt-4", "images", directory=tmp_path)
    with pytest.raises(InvalidItemError, match="input_payload.input must be a string or a list"):
        _provider().prepare_payloads(ITEMS, "gpt-4", "embedding", directory=tmp_path)
    embedding = [{"id": "e", "input_payload": {"input": ["a", "b"]}}]
    prepared = _provider().prepare_payloads(embedding, "text-embedding-3-small", "embedding",
                                            directory=tmp_path)
    assert prepared.endpoint == "/v1/embeddings"
    assert json.loads(prepared.jsonl_path.read_text())["url"] == "/v1/embeddings"


@pytest.mark.parametrize("model", ["gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-4", "gpt-4-turbo",
                                   "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini", "gpt-5",
                                   "gpt-5-mini"])
def test_prepare_payloads__seed_families_accepted(tmp_path: Path, model: str) -> None:
    assert _provider().prepare_payloads(ITEMS, model, "chat", directory=tmp_path).model == model


@pytest.mark.parametrize("model", ["claude-3", "text-davinci-003", "gpt-40", "o1-mini"])
def test_prepare_payloads__other_models_refused(tmp_path: Path, model: str) -> None:
    with pytest.raises(PermanentProviderError, match="not a supported"):
        _provider().prepare_payloads(ITEMS, model, "chat", directory=tmp_path)


def test_prepare_payloads__configured_models_only(tmp_path: Path) -> None:
    provider = _provider(models=[{"name": "gpt-5-mini", "mode": "chat"}])
    with pytest.raises(PermanentProviderError, match="not configured"):
        provider.prepare_payloads(ITEMS, "gpt-4o", "chat", directory=tmp_path)
    assert provider.prepare_payloads(ITEMS, "gpt-5-mini", "chat", directory=tmp_path)


# -- error classification --------------------------------------------------------------------

REQUEST = httpx2.Request("POST", "https://api.openai.com/v1/batches")


def _status_error(status: int, headers: dict[str, str] | None = None, code: str | None = None,
                  type_: str = "invalid_request_error",
                  message: str = "boom") -> openai.APIStatusError:
    body = {"message": message, "type": type_, "param": None, "code": code}
    response = httpx2.Response(status, headers=headers or {}, json={"error": body},
                               request=REQUEST)
    classes = {400: openai.BadRequestError, 401: openai.AuthenticationError,
               403: openai.PermissionDeniedError, 404: openai.NotFoundError,
               409: openai.ConflictError, 422: openai.UnprocessableEntityError,
               429: openai.RateLimitError}
    cls = classes.get(status, openai.InternalServerError if status >= 500
                      else openai.APIStatusError)
    return cls(f"Error code: {status} - {message}", response=response, body=body)


@pytest.mark.parametrize(
    "status,headers,code,transient,retry_after",
    [
        (429, {"retry-after": "20"}, "rate_limit_exceeded", True, 20.0),  # seconds hint
        (429, {"retry-after-ms": "1500", "retry-after": "9"}, None, True, 1.5),  # ms first
        (429, {}, "rate_limit_exceeded", True, 60.0),  # no hint: the seed's 60 s
        (429, {}, "insufficient_quota", False, None),  # quota, not rate: permanent
        (408, {}, None, True, None),  # request timeout
        (409, {}, None, True, None),  # conflict / lock timeout
        (500, {}, None, True, None),
        (502, {"retry-after": "0"}, None, True, 0.0),  # retry-after: 0 means now
        (503, {}, None, True, None),
        (400, {}, "invalid_value", False, None),  # malformed request
        (401, {}, "invalid_api_key", False, None),  # bad key
        (403, {}, None, False, None),
        (404, {}, None, False, None),  # batch not found
        (422, {}, None, False, None),
    ],
)
def test_classify_openai_error__table(status: int, headers: dict[str, str], code: str | None,
                                      transient: bool, retry_after: float | None) -> None:
    error = classify_openai_error(_status_error(status, headers, code))
    assert isinstance(error, TransientProviderError if transient else PermanentProviderError)
    assert error.status_code == status
    if transient:
        assert error.retry_after == retry_after


def test_classify_openai_error__connection_and_timeout_are_transient() -> None:
    for exc in (openai.APIConnectionError(request=REQUEST), openai.APITimeoutError(REQUEST)):
        assert isinstance(classify_openai_error(exc), TransientProviderError)


def test_classify_openai_error__redacts_the_key() -> None:
    exc = _status_error(401, message="Incorrect API key provided: sk-abcdef1234567890xyz.")
    error = classify_openai_error(exc, api_key="sk-abcdef1234567890xyz")
    assert "abcdef1234567890" not in str(error)
    assert "Incorrect API key" in str(error)


def test_parse_retry_after__http_date() -> None:
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"},
                             now=1445412500.0) == pytest.approx(10.0)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "inf"}) == 86400.0
    assert parse_retry_after({"retry-after-ms": "1e400"}) == 86400.0
    assert parse_retry_after(None) is None


# -- result lines ----------------------------------------------------------------------------

SUCCESS = {"id": "batch_req_123", "custom_id": "request-2", "response": {
    "status_code": 200, "request_id": "req_123", "body": {
        "id": "chatcmpl-123", "object": "chat.completion", "created": 1711652795,
        "model": "gpt-3.5-turbo-0125", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": "Hello."}, "logprobs": None,
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 22, "completion_tokens": 2, "total_tokens": 24},
        "system_fingerprint": "fp_123"}}, "error": None}
HTTP_ERROR = {"id": "batch_req_456", "custom_id": "r-7", "response": {
    "status_code": 400, "request_id": "req_abc", "body": {"error": {
        "message": "Invalid 'max_output_tokens': integer below minimum value.",
        "type": "invalid_request_error", "param": "max_output_tokens",
        "code": "integer_below_min_value"}}}, "error": None}
EXPIRED = {"id": "batch_req_123", "custom_id": "request-3", "response": None, "error": {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired."}}


def test_parse_result_line__success() -> None:
    row = parse_result_line(SUCCESS)
    assert (row.custom_id, row.is_success, row.output_text) == ("request-2", True, "Hello.")
    assert row.output_data == SUCCESS["response"]["body"]
    assert row.raw_metadata["id"] == "batch_req_123"
    assert row.raw_metadata["response"]["request_id"] == "req_123"
    assert row.output_data["usage"]["total_tokens"] == 24
    assert row.error_message is None


def test_parse_result_line__http_error() -> None:
    row = parse_result_line(HTTP_ERROR)
    assert (row.custom_id, row.is_success, row.status_code) == ("r-7", False, 400)
    assert row.error_message.startswith("Invalid 'max_output_tokens'")
    assert row.error_code == "integer_below_min_value"
    assert row.output_text is None


def test_parse_result_line__non_http_error() -> None:
    row = parse_result_line(EXPIRED)
    assert (row.is_success, row.status_code, row.error_code) == (False, None, "batch_expired")
    assert "completion window" in row.error_message


def test_missing_result_row() -> None:
    row = missing_result_row("r-9")
    assert (row.custom_id, row.is_success, row.error_code) == ("r-9", False, "missing_result")


def test_read_result_file__streams_and_rejects_a_cut_off_line(tmp_path: Path) -> None:
    path = tmp_path / "output.jsonl"
    text = json.dumps(SUCCESS) + "\n" + json.dumps(HTTP_ERROR) + "\n"
    path.write_text(text)
    assert [r.custom_id for r in read_result_file(path)] == ["request-2", "r-7"]
    path.write_text(text + json.dumps(EXPIRED)[:40])
    with pytest.raises(CorruptResultLine, match="line 3"):
        list(read_result_file(path))


def test_read_result_file__a_byte_order_mark_is_not_part_of_the_first_line(
        tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(SUCCESS).encode() + b"\n")
    [row] = list(read_result_file(path))
    assert row.is_success and row.raw_line == json.dumps(SUCCESS)


def test_embedding_inputs__token_arrays_are_one_input_each() -> None:
    from tracker.providers.openai import embedding_inputs

    assert embedding_inputs({"input": "one"}) == 1
    assert embedding_inputs({"input": [101, 102, 103]}) == 1  # one input, as token ids
    assert embedding_inputs({"input": [[1, 2], [3]]}) == 2
    assert embedding_inputs({"input": ["a", "b", "c"]}) == 3


def test_prepare_payloads__a_stored_payload_without_its_mode_field_is_refused_alone(
        tmp_path: Path) -> None:
    items = [{"id": "chatty", "input_payload": StoredPayload(
        '{"messages":[{"content":"x","role":"user"}]}')}]
    with pytest.raises(InvalidItemError, match="input_payload.input must be"):
        _provider().prepare_payloads(items, "text-embedding-3-small", "embedding",
                                     directory=tmp_path)
