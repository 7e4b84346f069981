"""The Anthropic provider's pure parts: chat translation, wire ids, status mapping, error
classification, result lines."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx2
import pytest

from tracker.providers.anthropic import (
    AnthropicBatchProvider,
    batch_status_from_anthropic,
    chat_params,
    normalize_status,
    parse_http_date,
    wire_custom_id,
)
from tracker.providers.anthropic_errors import classify_anthropic_error
from tracker.providers.anthropic_results import (
    CorruptResultLine,
    parse_result_line,
    read_result_file,
)
from tracker.providers.base import (
    BatchTooLarge,
    InvalidItemError,
    NormalizedStatus,
    PermanentProviderError,
    TransientProviderError,
)
from tracker.steps.budget import _output_tokens

CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens: any network call would fail
MODEL = "claude-haiku-4-5"
USER = {"role": "user", "content": "hi"}


def _provider(**config: Any) -> AnthropicBatchProvider:
    return AnthropicBatchProvider({"api_key": "sk-ant-test-0123456789",
                                   "base_url": CLOSED_PORT, **config})


# -- wire ids --------------------------------------------------------------------------------


def test_wire_custom_id__valid_ids_unchanged_others_derived_and_valid() -> None:
    for valid in ("a", "A-z_09", "x" * 64):
        assert wire_custom_id(valid) == valid
    for item_id in ("doc/7.txt", "x" * 65, "", "é" * 100, "a\n", "with space", "a.b"):
        wire = wire_custom_id(item_id)
        digest = hashlib.sha256(item_id.encode()).hexdigest()[:24]
        assert wire.endswith("-" + digest) and len(wire) <= 64
        assert wire == wire_custom_id(item_id)  # pure
        assert wire_custom_id(wire) == wire  # already valid
    assert wire_custom_id("doc/7.txt").startswith("doc_7_txt-")
    assert wire_custom_id("x" * 65) == "x" * 39 + "-" + hashlib.sha256(
        b"x" * 65).hexdigest()[:24]
    assert wire_custom_id("a\n") != "a\n"  # `$` would let a trailing newline through
    assert _provider().wire_custom_id("a.b") == wire_custom_id("a.b")


# -- chat translation ------------------------------------------------------------------------


def test_chat_params__system_and_developer_messages_become_system() -> None:
    params = chat_params({"messages": [{"role": "system", "content": "One."}, USER,
                                       {"role": "developer", "content": "Two."}],
                          "max_tokens": 10, "model": "gpt-4"}, MODEL, "i")
    assert params == {"model": MODEL, "max_tokens": 10, "messages": [USER],
                      "system": "One.\n\nTwo."}
    kept = chat_params({"system": "Zero.", "messages": [{"role": "system", "content": "One."},
                                                        USER], "max_tokens": 10}, MODEL, "i")
    assert kept["system"] == "Zero.\n\nOne."
    blocks = chat_params({"system": "Zero.", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "One.",
                                        "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": "Two."}, USER], "max_tokens": 10}, MODEL, "i")
    assert blocks["system"] == [
        {"type": "text", "text": "Zero."},
        {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Two."}]
    native = chat_params({"system": "Native.", "messages": [USER], "max_tokens": 10}, MODEL, "i")
    assert native["system"] == "Native."


def test_chat_params__max_tokens_from_the_item_then_the_model_default() -> None:
    assert chat_params({"messages": [USER], "max_tokens": 5}, MODEL, "i", 99)["max_tokens"] == 5
    from_completion = chat_params({"messages": [USER], "max_completion_tokens": 7}, MODEL, "i")
    assert from_completion["max_tokens"] == 7 and "max_completion_tokens" not in from_completion
    assert chat_params({"messages": [USER]}, MODEL, "i", 99)["max_tokens"] == 99
    with pytest.raises(InvalidItemError, match="needs max_tokens") as caught:
        chat_params({"messages": [USER]}, MODEL, "item-1")
    assert caught.value.custom_id == "item-1"
    for bad in (0, -1, "10", True, 1.5):
        with pytest.raises(InvalidItemError, match="max_tokens"):
            chat_params({"messages": [USER], "max_tokens": bad}, MODEL, "i")


def test_chat_params__openai_names_translated_native_params_pass_through() -> None:
    params = chat_params({"messages": [USER], "max_tokens": 10, "stop": "END", "user": "u-1",
                          "n": 1, "temperature": 0.2, "top_k": 5, "top_p": 0.9,
                          "tools": [{"name": "t", "input_schema": {"type": "object"}}],
                          "thinking": {"type": "enabled", "budget_tokens": 2000}},
                         MODEL, "i")
    assert params["stop_sequences"] == ["END"] and "stop" not in params
    assert params["metadata"] == {"user_id": "u-1"} and "user" not in params
    assert "n" not in params
    assert (params["temperature"], params["top_k"], params["top_p"]) == (0.2, 5, 0.9)
    assert params["tools"][0]["name"] == "t" and params["thinking"]["budget_tokens"] == 2000
    listed = chat_params({"messages": [USER], "max_tokens": 1, "stop": ["a", "b"]}, MODEL, "i")
    assert listed["stop_sequences"] == ["a", "b"]
    both = chat_params({"messages": [USER], "max_tokens": 1, "user": "u",
                        "metadata": {"user_id": "mine"}}, MODEL, "i")
    assert both["metadata"] == {"user_id": "mine"}


@pytest.mark.parametrize("payload,fragment", [
    ({"messages": [USER], "max_tokens": 1, "n": 2}, "'n'"),
    ({"messages": [USER], "max_tokens": 1, "logprobs": True}, "'logprobs'"),
    ({"messages": [USER], "max_tokens": 1, "response_format": {"type": "json_object"}},
     "'response_format'"),
    ({"messages": [USER], "max_tokens": 1, "seed": 3}, "'seed'"),
    ({"messages": [USER], "max_tokens": 1, "reasoning_effort": "low"}, "'reasoning_effort'"),
    ({"messages": [USER], "max_tokens": 1, "stream": True}, "streaming"),
    ({"messages": [], "max_tokens": 1}, "non-empty list"),
    ({"messages": "hi", "max_tokens": 1}, "non-empty list"),
    ({"max_tokens": 1}, "non-empty list"),
    ({"messages": [{"role": "system", "content": "x"}], "max_tokens": 1}, "no user"),
    ({"messages": [USER], "max_tokens": 1, "stop": 3}, "'stop'"),
    ("text", "must be an object"),
])
def test_chat_params__what_cannot_be_sent_fails_the_item_alone(payload: Any,
                                                              fragment: str) -> None:
    with pytest.raises(InvalidItemError, match=fragment) as caught:
        chat_params(payload, MODEL, "the-item")
    assert caught.value.custom_id == "the-item"


def _items(*ids: str, **payload: Any) -> list[dict[str, Any]]:
    return [{"id": i, "input_payload": {"messages": [USER], "max_tokens": 8, **payload}}
            for i in ids]


def test_prepare_payloads__jsonl_with_wire_ids_and_the_batch_model(tmp_path: Path) -> None:
    provider = _provider()
    prepared = provider.prepare_payloads(_items("a", "b/c"), MODEL, "chat", directory=tmp_path,
                                         metadata={"tracker_batch_id": "tb_1"})
    lines = [json.loads(line) for line in prepared.jsonl_path.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == list(prepared.custom_ids) == [
        "a", wire_custom_id("b/c")]
    assert lines[0]["params"] == {"model": MODEL, "max_tokens": 8, "messages": [USER]}
    assert prepared.endpoint == "/v1/messages" and prepared.mode == "chat"
    body = json.dumps({"requests": lines}, ensure_ascii=False, separators=(",", ":"))
    assert prepared.byte_size == len(body.encode()) + 1  # one newline more than commas


def test_prepare_payloads__models_modes_and_item_errors(tmp_path: Path) -> None:
    provider = _provider(models=[{"name": MODEL, "mode": "chat", "max_tokens": 64}])
    with pytest.raises(PermanentProviderError) as model:
        provider.prepare_payloads(_items("a"), "claude-other", "chat", directory=tmp_path)
    assert model.value.code == "unsupported_model"
    with pytest.raises(PermanentProviderError) as mode:
        provider.prepare_payloads(_items("a"), MODEL, "embedding", directory=tmp_path)
    assert mode.value.code == "unsupported_mode"
    no_max = [{"id": "a", "input_payload": {"messages": [USER]}}]
    prepared = provider.prepare_payloads(no_max, MODEL, "chat", directory=tmp_path)
    assert json.loads(prepared.jsonl_path.read_text())["params"]["max_tokens"] == 64
    prepared.jsonl_path.unlink()
    with pytest.raises(InvalidItemError) as bad_json:
        provider.prepare_payloads(_items("a", "b", temperature=float("nan")), MODEL, "chat",
                                  directory=tmp_path)
    assert bad_json.value.custom_id == "a"
    clash = wire_custom_id("x/y")
    with pytest.raises(InvalidItemError) as duplicate:
        provider.prepare_payloads(_items("x/y", clash), MODEL, "chat", directory=tmp_path)
    assert duplicate.value.custom_id == clash
    assert list(tmp_path.iterdir()) == []  # removed on every error


def test_prepare_payloads__batch_too_large_by_lines_and_bytes(tmp_path: Path) -> None:
    provider = _provider()
    provider.max_lines_per_batch = 2
    with pytest.raises(BatchTooLarge) as lines:
        provider.prepare_payloads(_items("a", "b", "c"), MODEL, "chat", directory=tmp_path)
    assert lines.value.fits == 2
    provider.max_lines_per_batch = 100
    one = provider.prepare_payloads(_items("a"), MODEL, "chat", directory=tmp_path)
    provider.max_bytes_per_batch = one.byte_size + 10
    one.jsonl_path.unlink()
    with pytest.raises(BatchTooLarge) as size:
        provider.prepare_payloads(_items("a", "b"), MODEL, "chat", directory=tmp_path)
    assert size.value.fits == 1
    assert list(tmp_path.iterdir()) == []


def test_inline_provider__no_upload_no_metadata_search() -> None:
    provider = _provider()
    assert provider.sends_requests_inline and not provider.has_batch_metadata
    assert (provider.max_lines_per_batch, provider.max_bytes_per_batch) == (100_000, 256 << 20)
    assert provider.endpoint_for("chat") == "/v1/messages"
    assert provider.find_batches_by_metadata("k", "v") == []
    with pytest.raises(NotImplementedError, match="inline"):
        provider.create_batch("file", "/v1/messages", {})
    assert provider.cancel_acknowledged("canceling")
    assert not provider.cancel_acknowledged("ended")  # ended is not cancelled
    assert not provider.cancel_acknowledged("in_progress")
    assert not provider.failed_validation("ended")


def test_missing_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(PermanentProviderError) as caught:
        AnthropicBatchProvider({"base_url": CLOSED_PORT})
    assert caught.value.code == "missing_api_key"
    monkeypatch.setenv("MY_ANTHROPIC_KEY", "sk-ant-from-env")
    assert AnthropicBatchProvider({"api_key_env": "MY_ANTHROPIC_KEY", "base_url": CLOSED_PORT})


# -- statuses --------------------------------------------------------------------------------


def _batch(status: str, *, cancel: bool = False, **counts: int) -> SimpleNamespace:
    return SimpleNamespace(
        id="msgbatch_1", processing_status=status,
        created_at=datetime(2027, 1, 15, 8, 0, 0, 500000, tzinfo=UTC),
        cancel_initiated_at=datetime(2027, 1, 15, 9, tzinfo=UTC) if cancel else None,
        request_counts=SimpleNamespace(**{
            "processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0,
            **counts}))


@pytest.mark.parametrize("batch,expected", [
    (_batch("in_progress", processing=3), NormalizedStatus.IN_PROGRESS),
    (_batch("canceling", cancel=True, processing=3), NormalizedStatus.IN_PROGRESS),
    (_batch("ended", succeeded=3), NormalizedStatus.COMPLETED),
    (_batch("ended", succeeded=1, errored=2), NormalizedStatus.COMPLETED),
    (_batch("ended", succeeded=2, expired=1), NormalizedStatus.FAILED),
    (_batch("ended", cancel=True, succeeded=1, canceled=2), NormalizedStatus.CANCELLED),
    (_batch("ended", cancel=True, succeeded=3), NormalizedStatus.CANCELLED),
])
def test_batch_status__mapping(batch: SimpleNamespace, expected: NormalizedStatus) -> None:
    status = batch_status_from_anthropic(batch)
    assert status.normalized_status is expected and status.known_status
    assert status.provider_status == batch.processing_status
    assert status.created_at == int(datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp())
    assert status.request_counts.total == 3
    assert (status.metadata, status.model, status.output_file_id) == ({}, None, None)


def test_batch_status__counts() -> None:
    counts = batch_status_from_anthropic(_batch("ended", succeeded=5, errored=1, canceled=2,
                                                expired=3)).request_counts
    assert (counts.total, counts.completed, counts.failed) == (11, 5, 6)


def test_normalize_status__unknown_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert normalize_status("anthropic_status_of_this_test") is (
                NormalizedStatus.IN_PROGRESS)
    assert caplog.text.count("anthropic_status_of_this_test") == 1
    assert not batch_status_from_anthropic(_batch("archiving")).known_status


def test_parse_http_date() -> None:
    assert parse_http_date("Fri, 15 Jan 2027 08:00:00 GMT") == int(
        datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp())
    for bad in (None, "", "yesterday"):
        assert parse_http_date(bad) is None


# -- errors ----------------------------------------------------------------------------------


def _status_error(status: int, error_type: str | None, message: str = "nope",
                  headers: dict[str, str] | None = None) -> anthropic.APIStatusError:
    body: Any = ({"type": "error", "error": {"type": error_type, "message": message}}
                 if error_type else None)
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages/batches")
    response = httpx2.Response(status, headers=headers or {}, json=body, request=request)
    return anthropic.APIStatusError(message, response=response, body=body)


@pytest.mark.parametrize("status,error_type,transient", [
    (400, "invalid_request_error", False), (401, "authentication_error", False),
    (403, "permission_error", False), (404, "not_found_error", False),
    (413, "request_too_large", False), (422, "invalid_request_error", False),
    (408, "timeout_error", True), (409, "conflict_error", True),
    (500, "api_error", True), (503, "api_error", True), (529, "overloaded_error", True),
])
def test_classify__by_status(status: int, error_type: str, transient: bool) -> None:
    error = classify_anthropic_error(_status_error(status, error_type, "bad thing"))
    assert isinstance(error, TransientProviderError) is transient
    assert isinstance(error, PermanentProviderError) is not transient
    assert (error.status_code, error.code) == (status, error_type)
    assert error.message == f"HTTP {status}: bad thing"


def test_classify__429_retry_after_and_its_default() -> None:
    hinted = classify_anthropic_error(_status_error(429, "rate_limit_error",
                                                    headers={"retry-after": "12"}))
    assert isinstance(hinted, TransientProviderError)
    assert (hinted.retry_after, hinted.code) == (12.0, "rate_limit_error")
    bare = classify_anthropic_error(_status_error(429, None))
    assert isinstance(bare, TransientProviderError)
    assert (bare.retry_after, bare.code) == (60.0, "rate_limit_error")
    overloaded = classify_anthropic_error(_status_error(529, "overloaded_error",
                                                        headers={"retry-after": "3"}))
    assert isinstance(overloaded, TransientProviderError) and overloaded.retry_after == 3.0


def test_classify__connection_errors_and_the_key_redacted() -> None:
    request = httpx2.Request("GET", "https://api.anthropic.com/v1/messages/batches")
    timeout = classify_anthropic_error(anthropic.APITimeoutError(request))
    assert isinstance(timeout, TransientProviderError) and timeout.code == "timeout"
    dropped = classify_anthropic_error(anthropic.APIConnectionError(request=request))
    assert isinstance(dropped, TransientProviderError) and dropped.code == "connection_error"
    key = "sk-ant-api03-secretsecret"
    leaked = classify_anthropic_error(_status_error(401, "authentication_error",
                                                    f"invalid x-api-key {key}"), api_key=key)
    assert key not in leaked.message and leaked.code == "authentication_error"
    other = classify_anthropic_error(ValueError(f"odd {key}"), api_key=key)
    assert isinstance(other, PermanentProviderError) and key not in other.message


# -- result lines ----------------------------------------------------------------------------


def _succeeded(custom_id: str, text: str = "hi", **usage: int) -> dict[str, Any]:
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": text},
                    {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                    {"type": "text", "text": "!"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0, **usage}}}}


def _errored(custom_id: str, error_type: str | None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": f"failed {error_type}"}
    if error_type is not None:
        error["type"] = error_type
    return {"custom_id": custom_id, "result": {"type": "errored", "error": {
        "type": "error", "error": error}}}


def test_parse_result_line__succeeded_text_and_usage() -> None:
    line = _succeeded("a", "hello", input_tokens=20, cache_read_input_tokens=100,
                      cache_creation_input_tokens=7, output_tokens=30)
    raw = json.dumps(line)
    row = parse_result_line(line, raw)
    assert row.is_success and row.output_text == "hello!"
    assert (row.prompt_tokens, row.cached_tokens, row.completion_tokens, row.total_tokens,
            row.reasoning_tokens) == (127, 100, 30, 157, None)
    assert row.output_data == line and row.raw_line == raw and row.status_code is None
    tools_only = _succeeded("b")
    tools_only["result"]["message"]["content"] = [{"type": "tool_use", "id": "t", "name": "f",
                                                   "input": {}}]
    assert parse_result_line(tools_only).output_text is None


@pytest.mark.parametrize("error_type,status", [
    ("invalid_request_error", 400), ("authentication_error", 401), ("billing_error", 402),
    ("permission_error", 403), ("not_found_error", 404), ("request_too_large", 413),
    ("rate_limit_error", 429), ("api_error", 500), ("overloaded_error", 529),
    ("brand_new_error", 500),
])
def test_parse_result_line__errored_status_from_the_error_type(error_type: str,
                                                               status: int) -> None:
    row = parse_result_line(_errored("a", error_type))
    assert not row.is_success
    assert (row.status_code, row.error_code) == (status, error_type)
    assert row.error_message == f"failed {error_type}"


def test_parse_result_line__canceled_expired_and_corrupt() -> None:
    canceled = parse_result_line({"custom_id": "a", "result": {"type": "canceled"}})
    assert (canceled.error_code, canceled.status_code, canceled.is_success) == (
        "batch_cancelled", None, False)
    expired = parse_result_line({"custom_id": "a", "result": {"type": "expired"}})
    assert (expired.error_code, expired.status_code) == ("batch_expired", None)
    for bad in ({"result": {"type": "canceled"}}, {"custom_id": "a"},
                {"custom_id": "a", "result": {}}, {"custom_id": "", "result": {"type": "x"}}):
        with pytest.raises(CorruptResultLine):
            parse_result_line(bad)


def test_read_result_file__corrupt_lines_raise_or_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_succeeded("a")) + "\n" + '{"custom_id": "b", "res\n'
                    + json.dumps(_errored("c", "api_error")) + "\n\n")
    with pytest.raises(CorruptResultLine, match="line 2"):
        list(read_result_file(path))
    assert [row.custom_id for row in read_result_file(path, skip_corrupt=True)] == ["a", "c"]


def test_budget_worst_case__counts_the_largest_output_limit_an_item_gives() -> None:
    """Anthropic is sent `max_tokens` when an item gives both keys; OpenAI reads
    `max_completion_tokens` first. The worst case takes the larger, so it holds for both."""
    payload = {"messages": [{"role": "user", "content": "hi"}],
               "max_tokens": 4000, "max_completion_tokens": 10}
    sent = chat_params(payload, "claude-sonnet-4-5", "x", 64)["max_tokens"]
    assert _output_tokens([json.dumps(payload)], None, 64) == sent == 4000
    assert _output_tokens([json.dumps({"messages": []})], None, 64) == 64  # the default
