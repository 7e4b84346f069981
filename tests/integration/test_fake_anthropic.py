"""The fake Anthropic Message Batches API, seen through the real `anthropic` SDK over HTTP.

Timeline on the manual clock (t = 0 at create): a batch of n requests runs for 4 seconds,
request i finishing at 4 * (i + 1) / n; a cancel takes 1 second; a batch expires at 24 h.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import anthropic
import pytest

from tracker.testing.fake_anthropic import FakeAnthropic, Fault, ManualClock
from tracker.testing.fake_server import fake_server_process

Serve = Callable[..., tuple[FakeAnthropic, anthropic.Anthropic]]
INF = float("inf")
KEY = "sk-ant-test"


@pytest.fixture
def serve(clock: ManualClock) -> Iterator[Serve]:
    """Start a fake (with the given options) and an SDK client on it; all stop at teardown."""
    with contextlib.ExitStack() as stack:
        def start(**options: Any) -> tuple[FakeAnthropic, anthropic.Anthropic]:
            options = {"in_progress_seconds": 4.0, "canceling_seconds": 1.0, **options}
            server = stack.enter_context(FakeAnthropic(clock=clock, api_key=KEY, **options))
            client = anthropic.Anthropic(api_key=KEY, base_url=server.base_url,
                                         max_retries=0)
            stack.callback(client.close)
            return server, client

        yield start


def _request(custom_id: str, text: str, **params: Any) -> dict[str, Any]:
    return {"custom_id": custom_id,
            "params": {"model": "claude-haiku-4-5", "max_tokens": 64,
                       "messages": [{"role": "user", "content": text}], **params}}


def _submit(client: anthropic.Anthropic, *texts: str) -> str:
    """One request per text (custom ids a, b, c...); the batch id."""
    requests: Any = [_request(chr(ord("a") + n), text) for n, text in enumerate(texts)]
    return client.messages.batches.create(requests=requests).id


def _results(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {line.custom_id: line.result for line in client.messages.batches.results(batch_id)}


def _listed(client: anthropic.Anthropic) -> list[str]:
    return [b.id for b in client.messages.batches.list()]


def test_create__in_progress_until_every_request_finished_then_ended_with_counts(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve()
    created = client.messages.batches.create(requests=[
        _request("a", "hello"), _request("b", "bad [fail:400]"),
        _request("c", "boom [fail:500]"), _request("d", "again")])
    assert created.id.startswith("msgbatch_") and created.type == "message_batch"
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 4 and created.results_url is None
    assert created.expires_at - created.created_at == timedelta(hours=24)
    assert (created.ended_at, created.cancel_initiated_at, created.archived_at) == (
        None, None, None)
    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        client.messages.batches.results(created.id)
    clock.advance(3.5)  # three of four done, but counts move only when the batch ends
    batch = client.messages.batches.retrieve(created.id)
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 4 and batch.request_counts.succeeded == 0
    assert server.executions == []
    clock.advance(0.5)
    batch = client.messages.batches.retrieve(created.id)
    assert batch.processing_status == "ended"
    assert batch.ended_at is not None
    assert batch.ended_at - batch.created_at == timedelta(seconds=4)
    counts = batch.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled,
            counts.expired) == (0, 2, 2, 0, 0)
    assert batch.results_url == f"{server.base_url}/v1/messages/batches/{created.id}/results"
    assert batch._request_id is not None and batch._request_id.startswith("req_")


def test_results__one_line_per_request_in_any_order_each_result_type(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve()
    texts = [f"line {n}" for n in range(8)] + ["bad [fail:400]", "boom [fail:500]",
                                               "counted [usage:120,30,100,7]"]
    batch_id = _submit(client, *texts)
    clock.advance(4.0)
    lines = list(client.messages.batches.results(batch_id))
    ids = [line.custom_id for line in lines]
    assert sorted(ids) == [chr(ord("a") + n) for n in range(len(texts))]
    assert ids != sorted(ids)  # shuffled, as the API warns it may be
    results = {line.custom_id: line.result for line in lines}
    first = results["a"]
    assert first.type == "succeeded"
    message = first.message
    assert (message.type, message.role, message.model) == ("message", "assistant",
                                                           "claude-haiku-4-5")
    assert message.content[0].type == "text" and message.content[0].text == "echo: line 0"
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    bad = results["i"]
    assert bad.type == "errored"
    assert bad.error.type == "error" and bad.error.error.type == "invalid_request_error"
    boom = results["j"]
    assert boom.type == "errored" and boom.error.error.type == "api_error"
    counted = results["k"]
    assert counted.type == "succeeded"
    usage = counted.message.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens) == (120, 30, 100, 7)
    raw = client.messages.batches.with_raw_response.retrieve(batch_id)
    assert raw.headers["request-id"].startswith("req_")


def test_create__synchronous_validation_refuses_the_whole_batch_with_400(
        serve: Serve) -> None:
    server, client = serve(max_requests=3)
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([_request("a b", "x")], "requests.0.custom_id: String should match pattern"),
        ([_request("ok", "x"), _request("x" * 65, "x")],
         "requests.1.custom_id: String should have at most 64 characters"),
        ([_request("a", "x"), _request("a", "y")], "requests.1.custom_id: Duplicate"),
        ([_request("a", "x", max_tokens=0)], "requests.0.params.max_tokens"),
        ([_request("a", "x", messages=[])], "requests.0.params.messages"),
        ([{"custom_id": "a", "params": {"model": "m", "messages": [
            {"role": "user", "content": "x"}]}}], "requests.0.params.max_tokens: Field req"),
        ([_request(f"r{n}", "x") for n in range(4)], "at most 3 items"),
        ([], "at least 1 item"),
    ]
    for requests, message in cases:
        with pytest.raises(anthropic.BadRequestError, match=message) as caught:
            client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        body = caught.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
    assert server.batches == {}
    assert client.messages.batches.create(requests=[
        _request("A-z_09" + "x" * 58, "ok")]).processing_status == "in_progress"


def test_create__a_body_over_the_size_limit_is_413_request_too_large(serve: Serve) -> None:
    server, client = serve(max_body_bytes=2000)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.batches.create(requests=[_request("a", "x" * 3000)])
    assert caught.value.status_code == 413
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "request_too_large"
    assert server.batches == {}


def test_cancel__canceling_then_ended_with_finished_requests_kept_and_the_rest_canceled(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve()
    batch_id = _submit(client, "one", "two", "three", "four")
    with pytest.raises(anthropic.BadRequestError, match="Cancel it first"):
        client.messages.batches.delete(batch_id)
    clock.advance(1.5)  # "a" finished at 1
    canceling = client.messages.batches.cancel(batch_id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.cancel_initiated_at - canceling.created_at == timedelta(seconds=1.5)
    clock.advance(0.5)  # "b" would have finished at 2, but the cancel came first
    again = client.messages.batches.cancel(batch_id)
    assert again.processing_status == "canceling"
    assert again.cancel_initiated_at == canceling.cancel_initiated_at
    clock.advance(0.5)
    ended = client.messages.batches.retrieve(batch_id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 1 and ended.request_counts.canceled == 3
    results = _results(client, batch_id)
    assert {k: r.type for k, r in results.items()} == {
        "a": "succeeded", "b": "canceled", "c": "canceled", "d": "canceled"}
    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        client.messages.batches.cancel(batch_id)
    deleted = client.messages.batches.delete(batch_id)
    assert (deleted.id, deleted.type) == (batch_id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch_id)
    assert server.batch_custom_ids(batch_id) == ["a", "b", "c", "d"]


def test_slow__the_batch_ends_at_expiry_with_the_unfinished_requests_expired(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve()
    batch_id = _submit(client, "quick", "stuck [slow]")
    clock.advance(3600.0)
    assert client.messages.batches.retrieve(batch_id).processing_status == "in_progress"
    clock.advance(86400.0 - 3600.0 - 0.5)
    assert client.messages.batches.retrieve(batch_id).processing_status == "in_progress"
    clock.advance(0.5)
    batch = client.messages.batches.retrieve(batch_id)
    assert batch.processing_status == "ended" and batch.ended_at == batch.expires_at
    assert (batch.request_counts.succeeded, batch.request_counts.expired) == (1, 1)
    assert {k: r.type for k, r in _results(client, batch_id).items()} == {
        "a": "succeeded", "b": "expired"}
    _, short = serve(expiry_seconds=10.0)
    other = _submit(short, "stuck [slow]")
    assert short.messages.batches.retrieve(other).expires_at - short.messages.batches.retrieve(
        other).created_at == timedelta(seconds=10)
    clock.advance(10.0)
    assert _results(short, other)["a"].type == "expired"


def test_batch_not_found__retrieve_and_cancel_404_after_create_then_recover(
        serve: Serve, clock: ManualClock) -> None:
    _, client = serve(batch_not_found_seconds=3.0)
    batch_id = _submit(client, "fine")
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.batches.retrieve(batch_id)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert caught.value.request_id is not None
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.cancel(batch_id)
    assert _listed(client) == [batch_id]
    clock.advance(2.5)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch_id)
    clock.advance(0.5)
    assert client.messages.batches.retrieve(batch_id).processing_status == "in_progress"
    _, default = serve()
    other = _submit(default, "fine")
    assert default.messages.batches.retrieve(other).id == other


def test_results_not_found__the_results_url_404s_for_a_while_after_the_end(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve(results_not_found_seconds=5.0)
    batch_id = _submit(client, "fine")
    clock.advance(4.0)
    assert client.messages.batches.retrieve(batch_id).results_url is not None
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.results(batch_id)
    clock.advance(4.5)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.results(batch_id)
    server.results_not_found_seconds = 0.0  # live switch
    assert _results(client, batch_id)["a"].type == "succeeded"
    server.results_not_found_seconds = INF
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.results(batch_id)


def test_list_lag__new_batches_join_the_list_late_but_retrieve_sees_them(
        serve: Serve, clock: ManualClock) -> None:
    _, client = serve(list_lag_seconds=10.0)
    batch_id = _submit(client, "fine")
    assert _listed(client) == []
    assert client.messages.batches.retrieve(batch_id).processing_status == "in_progress"
    clock.advance(9.5)
    assert _listed(client) == []
    clock.advance(0.5)
    assert _listed(client) == [batch_id]


def test_list__newest_first_in_pages_both_ways(serve: Serve, clock: ManualClock) -> None:
    _, client = serve()
    made = []
    for n in range(5):
        made.append(_submit(client, f"batch {n}"))
        clock.advance(1.0)
    newest_first = made[::-1]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more
    assert (page.first_id, page.last_id) == (newest_first[0], newest_first[1])
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first  # auto-paging
    after = client.messages.batches.list(limit=2, after_id=newest_first[3])
    assert [b.id for b in after.data] == newest_first[4:] and not after.has_more
    before = client.messages.batches.list(limit=2, before_id=newest_first[4])
    assert [b.id for b in before.data] == newest_first[2:4] and before.has_more
    backwards = client.messages.batches.list(limit=1, before_id=newest_first[2])
    assert [b.id for b in backwards] == [newest_first[1], newest_first[0]]  # pages go newer
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.list(limit=1001)


def test_drop_after_create__the_batch_exists_without_an_answer_and_list_shows_it(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve(list_lag_seconds=2.0)
    server.add_fault(Fault("POST", "/v1/messages/batches", kind="drop_after"))
    with pytest.raises(anthropic.APIConnectionError):
        _submit(client, "one", "two", "three")
    assert len(server.batches) == 1  # applied, though the client never heard of it
    (ghost,) = server.batches
    assert _listed(client) == []
    clock.advance(2.0)
    (listed,) = client.messages.batches.list()
    assert listed.id == ghost and listed.request_counts.processing == 3
    assert server.batch_custom_ids(ghost) == ["a", "b", "c"]
    clock.advance(2.0)  # the ghost runs and ends whether or not anybody looks
    assert sorted(server.executions) == [(ghost, c, "succeeded") for c in "abc"]
    again = _submit(client, "four")  # the fault fired once: this create is answered
    clock.advance(4.0)
    list(client.messages.batches.results(again))
    list(client.messages.batches.results(again))  # reading twice runs nothing again
    ran = [(b, c) for b, c, _ in server.executions]
    assert len(ran) == len(set(ran)) == 4
    assert server.fault_counts["drop_after"] == 1


def test_drop_before_create__nothing_is_created(serve: Serve) -> None:
    server, client = serve()
    server.add_fault(Fault("POST", "/v1/messages/batches", kind="drop_before"))
    with pytest.raises(anthropic.APIConnectionError):
        _submit(client, "one")
    assert server.batches == {}
    assert server.count_requests("POST", "/v1/messages/batches") == 1


def test_http_error_faults__the_sdk_raises_its_error_classes(serve: Serve) -> None:
    server, client = serve()
    batch_id = _submit(client, "fine")
    path = f"/v1/messages/batches/{batch_id}"
    server.add_fault(Fault("GET", path, status=429, headers={"retry-after": "7"}))
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.batches.retrieve(batch_id)
    assert limited.value.response.headers["retry-after"] == "7"
    assert isinstance(limited.value.body, dict)
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    server.add_fault(Fault("GET", path, status=529))
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.batches.retrieve(batch_id)
    assert overloaded.value.status_code == 529
    assert isinstance(overloaded.value, anthropic.APIStatusError)
    assert isinstance(overloaded.value.body, dict)
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    server.add_fault(Fault("POST", "/v1/messages/batches", status=500))
    with pytest.raises(anthropic.InternalServerError) as failed:
        _submit(client, "fine")
    assert isinstance(failed.value.body, dict)
    assert failed.value.body["error"]["type"] == "api_error"
    assert len(server.batches) == 1  # the 500 applied nothing
    assert client.messages.batches.retrieve(batch_id).id == batch_id  # faults used up
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_nope")
    stranger = anthropic.Anthropic(api_key="sk-ant-wrong", base_url=server.base_url,
                                   max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        stranger.messages.batches.list()
    stranger.close()
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["error"]["type"] == "authentication_error"


def test_raw_wire__x_api_key_header_version_header_and_jsonl_results(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve()
    batch_id = _submit(client, "fine")
    clock.advance(4.0)

    def get(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        try:
            with urlopen(Request(server.base_url + path, headers=headers)) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except HTTPError as error:
            return error.code, dict(error.headers), error.read()

    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    status, answer_headers, body = get(f"/v1/messages/batches/{batch_id}/results", headers)
    assert status == 200 and answer_headers["Content-Type"] == "application/x-jsonl"
    (line,) = [json.loads(raw) for raw in body.splitlines()]
    assert line["custom_id"] == "a" and line["result"]["type"] == "succeeded"
    status, answer_headers, body = get("/v1/messages/batches", {"x-api-key": KEY})
    assert status == 400 and answer_headers["request-id"].startswith("req_")
    assert json.loads(body) == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "anthropic-version: header is required"},
        "request_id": answer_headers["request-id"]}
    status, _, body = get("/v1/messages/batches", {"anthropic-version": "2023-06-01"})
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"


def test_short_results_fault__the_download_loses_its_last_line(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve()
    batch_id = _submit(client, "one", "two", "three")
    clock.advance(4.0)
    server.add_fault(Fault("GET", "*/results", kind="short"))
    assert len(list(client.messages.batches.results(batch_id))) == 2
    assert len(list(client.messages.batches.results(batch_id))) == 3


def test_cli__port_file_and_switch_flags() -> None:
    with fake_server_process("tracker.testing.fake_anthropic", "--batch-not-found-seconds",
                             "inf", "--list-lag-seconds", "0") as base_url:
        client = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0)
        batch_id = _submit(client, "fine")
        listed = client.messages.batches.list().data[0]  # zero-second run: ended on this read
        assert (listed.id, listed.processing_status) == (batch_id, "ended")
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(batch_id)
        client.close()
