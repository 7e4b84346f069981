"""The fake Batch API's eventual-consistency switches and markers, seen through the `openai` SDK.

Timeline on the manual clock (t = 0 at create): in_progress at 1, lines done by 3, completed
at 4; a cancel takes 1 second.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from tracker.testing.fake_openai import FakeOpenAI, Fault, ManualClock
from tracker.testing.fake_server import fake_server_process

Serve = Callable[..., tuple[FakeOpenAI, openai.OpenAI]]
INF = float("inf")


@pytest.fixture
def serve(clock: ManualClock) -> Iterator[Serve]:
    """Start a fake (with the given switches) and an SDK client on it; all stop at teardown."""
    with contextlib.ExitStack() as stack:
        def start(**switches: Any) -> tuple[FakeOpenAI, openai.OpenAI]:
            server = stack.enter_context(FakeOpenAI(
                clock=clock, validating_seconds=1.0, in_progress_seconds=2.0,
                finalizing_seconds=1.0, cancelling_seconds=1.0, **switches))
            client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
            stack.callback(client.close)
            return server, client

        yield start


def _line(custom_id: str, text: str) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "gpt-5-mini",
                                "messages": [{"role": "user", "content": text}]}})


def _submit(client: openai.OpenAI, *texts: str) -> str:
    """Upload one line per text (custom ids a, b, c...) and create a batch; its id."""
    content = "".join(_line(chr(ord("a") + n), text) + "\n" for n, text in enumerate(texts))
    uploaded = client.files.create(file=("x.jsonl", content.encode(), "application/jsonl"),
                                   purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h", metadata={"test": "switches"}).id


def _listed(client: openai.OpenAI) -> list[str]:
    return [b.id for b in client.batches.list()]


def _download(client: openai.OpenAI, file_id: str | None) -> bytes:
    assert file_id is not None
    return client.files.content(file_id).content


def test_late_files__ids_are_null_for_a_while_after_the_terminal_status(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve(late_files_seconds=5.0)
    batch_id = _submit(client, "fine", "bad [fail:400]")
    clock.advance(4.0)  # completed at 4; the files are late until 9
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "completed"
    assert (batch.output_file_id, batch.error_file_id) == (None, None)
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
    listed = client.batches.list().data[0]
    assert (listed.output_file_id, listed.error_file_id) == (None, None)
    truth = server.get_batch(batch_id)  # the files exist inside the server already
    assert truth["output_file_id"] in server.files and truth["error_file_id"] in server.files
    clock.advance(4.5)
    assert client.batches.retrieve(batch_id).output_file_id is None
    clock.advance(1.0)
    batch = client.batches.retrieve(batch_id)
    assert (batch.output_file_id, batch.error_file_id) == (truth["output_file_id"],
                                                           truth["error_file_id"])
    assert b'"custom_id": "a"' in _download(client, batch.output_file_id)
    _, default = serve()
    other = _submit(default, "fine")
    clock.advance(4.0)
    assert default.batches.retrieve(other).output_file_id is not None


def test_list_lag__new_batches_join_the_list_late_but_retrieve_sees_them(
        serve: Serve, clock: ManualClock) -> None:
    _, client = serve(list_lag_seconds=10.0)
    batch_id = _submit(client, "fine")
    assert _listed(client) == []
    assert client.batches.retrieve(batch_id).status == "validating"
    clock.advance(9.5)
    assert _listed(client) == []
    clock.advance(1.0)
    assert _listed(client) == [batch_id]
    _, default = serve()
    other = _submit(default, "fine")
    assert _listed(default) == [other]


def test_batch_not_found__retrieve_and_cancel_404_after_create_then_recover(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve(batch_not_found_seconds=3.0)
    batch_id = _submit(client, "fine")
    with pytest.raises(openai.NotFoundError, match=f"No such Batch object: {batch_id}"):
        client.batches.retrieve(batch_id)
    with pytest.raises(openai.NotFoundError, match=f"No such Batch object: {batch_id}"):
        client.batches.cancel(batch_id)
    assert _listed(client) == [batch_id]
    clock.advance(2.5)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(batch_id)
    clock.advance(1.0)
    assert client.batches.retrieve(batch_id).status == "finalizing"  # not cancelled by the 404
    server.batch_not_found_seconds = INF  # a vanished batch, set live
    clock.advance(1000.0)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(batch_id)
    _, default = serve()
    assert default.batches.retrieve(_submit(default, "fine")).status == "validating"


def test_file_not_found__result_downloads_404_for_a_while_then_work(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve(file_not_found_seconds=5.0)
    batch_id = _submit(client, "fine", "bad [fail:400]")
    clock.advance(4.0)
    batch = client.batches.retrieve(batch_id)  # the result files are made by this read
    assert batch.status == "completed"
    assert server.files[str(batch.output_file_id)].kind == "output"
    assert server.files[str(batch.error_file_id)].kind == "error"
    for file_id in (batch.output_file_id, batch.error_file_id):
        with pytest.raises(openai.NotFoundError, match="No such File object"):
            _download(client, file_id)
    assert b'"custom_id": "a"' in _download(client, batch.input_file_id)  # inputs unaffected
    clock.advance(4.5)
    with pytest.raises(openai.NotFoundError):
        _download(client, batch.output_file_id)
    clock.advance(1.0)
    assert b'"custom_id": "a"' in _download(client, batch.output_file_id)
    assert b'"custom_id": "b"' in _download(client, batch.error_file_id)
    server.file_not_found_kinds = frozenset({"error"})  # only error files, lost forever
    server.file_not_found_seconds = INF
    lost = _submit(client, "fine", "bad [fail:400]")
    clock.advance(1000.0)
    batch = client.batches.retrieve(lost)
    assert b'"custom_id": "a"' in _download(client, batch.output_file_id)
    with pytest.raises(openai.NotFoundError):
        _download(client, batch.error_file_id)
    _, default = serve()
    other = _submit(default, "fine")
    clock.advance(4.0)
    assert _download(default, default.batches.retrieve(other).output_file_id)


def test_surrogate_marker__reply_holds_a_lone_surrogate_escape(
        serve: Serve, clock: ManualClock) -> None:
    _, client = serve()
    batch_id = _submit(client, "hi [surrogate]", "hi")
    clock.advance(4.0)
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert batch.request_counts.completed == 2
    raw = _download(client, batch.output_file_id)
    assert raw.count(b"\\ud800") == 1
    rows = {row["custom_id"]: row["response"]["body"]
            for row in map(json.loads, raw.splitlines())}
    weird = rows["a"]["choices"][0]["message"]["content"]
    assert weird == "echo: hi [surrogate] \ud800"
    assert rows["b"]["choices"][0]["message"]["content"] == "echo: hi"
    usage = rows["a"]["usage"]
    assert usage["completion_tokens"] == len(weird) // 4 + 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_batch_fail_marker__failed_with_null_errors_and_nothing_run(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve()
    batch_id = _submit(client, "fine", "doomed [batch-fail]")
    invalid_id = _submit(client, "fine", "bad line [invalid]")
    ok_id = _submit(client, "fine")
    clock.advance(1.0)
    raw = client.batches.with_raw_response.retrieve(batch_id).http_response.json()
    assert raw["status"] == "failed" and raw["errors"] is None
    assert (raw["output_file_id"], raw["error_file_id"]) == (None, None)
    assert raw["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert raw["failed_at"] is not None
    invalid = client.batches.retrieve(invalid_id)  # other validation failures keep errors
    assert invalid.status == "failed" and invalid.errors is not None
    clock.advance(100.0)
    assert client.batches.retrieve(batch_id).status == "failed"
    assert client.batches.retrieve(ok_id).status == "completed"
    assert [e for e in server.executions if e[0] == batch_id] == []


def test_cancel_refusal_status__ended_or_cancelling_batches_refuse_with_it(
        serve: Serve, clock: ManualClock) -> None:
    server, client = serve(cancel_refusal_status=400)
    batch_id = _submit(client, "fine")
    done_id = _submit(client, "fine")
    assert client.batches.cancel(batch_id).status == "cancelling"
    with pytest.raises(openai.BadRequestError,
                       match=f"Batch {batch_id} cannot be cancelled: it is already cancelling"):
        client.batches.cancel(batch_id)
    clock.advance(4.0)
    assert client.batches.retrieve(batch_id).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="it is already cancelled") as caught:
        client.batches.cancel(batch_id)
    assert caught.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="it is already completed"):
        client.batches.cancel(done_id)
    server.cancel_refusal_status = 409  # the default, set live: today's answers again
    assert client.batches.cancel(batch_id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(done_id)


def test_fault_every__fires_on_every_second_match_until_used_up(serve: Serve) -> None:
    server, client = serve()
    batch_id = _submit(client, "fine")

    def outcomes(count: int) -> list[int]:
        seen = []
        for _ in range(count):
            try:
                client.batches.retrieve(batch_id)
                seen.append(200)
            except openai.APIStatusError as exc:
                seen.append(exc.status_code)
        return seen

    server.add_fault(Fault(method="GET", path="/v1/batches/*", status=503, times=3, skip=1,
                           every=2))
    assert outcomes(8) == [200, 503, 200, 503, 200, 503, 200, 200]
    server.add_fault(Fault(method="GET", path="/v1/batches/*", status=503, times=None,
                           skip=1, every=2))
    assert outcomes(6) == [200, 503, 200, 503, 200, 503]
    server.clear_faults()
    server.add_fault(Fault(method="GET", path="/v1/batches/*", status=503, times=2, skip=1))
    assert outcomes(4) == [200, 503, 503, 200]  # without `every`: as before


def test_garble_fault__the_middle_line_is_cut_the_others_whole(serve: Serve,
                                                               clock: ManualClock) -> None:
    server, client = serve()
    batch_id = _submit(client, "one", "two", "three", "four", "five")
    clock.advance(10.0)
    output_file = client.batches.retrieve(batch_id).output_file_id
    whole = _download(client, output_file).decode().splitlines()
    server.add_fault(Fault(method="GET", path="/v1/files/*/content", kind="garble"))
    garbled = _download(client, output_file).decode().splitlines()
    assert len(garbled) == len(whole) == 5
    bad = [n for n, (g, w) in enumerate(zip(garbled, whole, strict=True)) if g != w]
    assert bad == [2] and whole[2].startswith(garbled[2])
    with pytest.raises(ValueError):
        json.loads(garbled[2])


def test_latency__every_request_takes_that_long(serve: Serve) -> None:
    _server, client = serve(latency_seconds=0.3)
    for call in (client.batches.list, lambda: _submit(client, "one")):
        start = time.monotonic()
        call()
        assert time.monotonic() - start >= 0.3


def test_cli__switch_flags_reach_the_server() -> None:
    with fake_server_process(
            "tracker.testing.fake_openai", "--late-files-seconds", "3600",
            "--list-lag-seconds", "0", "--batch-not-found-seconds", "inf",
            "--file-not-found-seconds", "inf", "--file-not-found-kinds", "error",
            "--cancel-refusal-status", "400") as base_url:
        client = openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0)
        batch_id = _submit(client, "fine")
        listed = client.batches.list().data[0]  # zero-second phases: completed on this read
        assert (listed.id, listed.status, listed.output_file_id) == (batch_id, "completed",
                                                                     None)
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve(batch_id)
        with pytest.raises(openai.NotFoundError):
            client.batches.cancel(batch_id)
        client.close()
