"""`AnthropicBatchProvider` through the real `anthropic` SDK over HTTP, against `FakeAnthropic`.

All on a manual clock shared with the fake: a batch of n requests runs for 4 seconds, a cancel
takes 1; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tracker.providers import registry
from tracker.providers.anthropic import AnthropicBatchProvider
from tracker.providers.base import (
    BatchTooLarge,
    NormalizedStatus,
    PermanentProviderError,
    PreparedBatch,
    ProviderResultRow,
    ResultsNotReady,
    TransientProviderError,
)
from tracker.retry import Outcome, classify
from tracker.testing.fake_anthropic import FakeAnthropic, Fault, ManualClock

KEY = "sk-ant-test-0123456789"
MODEL = "claude-haiku-4-5"
Serve = Callable[..., tuple[FakeAnthropic, AnthropicBatchProvider]]


@pytest.fixture
def serve(clock: ManualClock) -> Iterator[Serve]:
    """Start a fake (with the given options) and a provider on it; all stop at teardown."""
    with contextlib.ExitStack() as stack:
        def start(**options: Any) -> tuple[FakeAnthropic, AnthropicBatchProvider]:
            config = options.pop("config", {})
            options = {"in_progress_seconds": 4.0, "canceling_seconds": 1.0, **options}
            server = stack.enter_context(FakeAnthropic(clock=clock, api_key=KEY, **options))
            provider = AnthropicBatchProvider({
                "api_key": KEY, "base_url": server.base_url, "max_retries": 0,
                "models": [{"name": MODEL, "mode": "chat", "max_tokens": 256}], **config})
            return server, provider

        yield start


def _item(item_id: str, text: str, **payload: Any) -> dict[str, Any]:
    return {"id": item_id,
            "input_payload": {"messages": [{"role": "user", "content": text}], **payload}}


def _prepare(provider: AnthropicBatchProvider, tmp_path: Path,
             *items: dict[str, Any]) -> PreparedBatch:
    return provider.prepare_payloads(items, MODEL, "chat", directory=tmp_path)


def _run(provider: AnthropicBatchProvider, clock: ManualClock, tmp_path: Path,
         *items: dict[str, Any]) -> tuple[str, PreparedBatch]:
    """Create a batch of `items` and let it end; its id and the prepared batch."""
    prepared = _prepare(provider, tmp_path, *items)
    created = provider.create_batch_inline(prepared)
    clock.advance(4.0)
    return created.provider_batch_id, prepared


def _rows(provider: AnthropicBatchProvider, batch_id: str, prepared: PreparedBatch,
          directory: Path | None = None, **options: Any) -> dict[str, ProviderResultRow]:
    with provider.fetch_results(batch_id, expected_custom_ids=prepared.custom_ids,
                                directory=directory, **options) as fetched:
        return {row.custom_id: row for row in fetched}


def test_round_trip__system_translated_max_tokens_default_results_joined_by_custom_id(
        serve: Serve, clock: ManualClock, tmp_path: Path) -> None:
    server, provider = serve()
    calls: list[tuple[str, str]] = []
    provider.call_observer = lambda endpoint, outcome: calls.append((endpoint, outcome))
    items = [_item(f"item-{n}", f"question {n}") for n in range(6)]
    items[0]["input_payload"]["messages"].insert(0, {"role": "system", "content": "Be brief."})
    items[1]["input_payload"]["max_tokens"] = 32
    prepared = _prepare(provider, tmp_path, *items)
    created = provider.create_batch_inline(prepared)
    assert created.provider_status == "in_progress"
    assert created.normalized_status is NormalizedStatus.IN_PROGRESS
    assert created.request_counts.total == 6 and created.created_at == int(clock())
    assert created.metadata == {} and created.model is None
    sent = server.batches[created.provider_batch_id].requests
    assert [r["custom_id"] for r in sent] == [f"item-{n}" for n in range(6)]
    assert sent[0]["params"]["system"] == "Be brief."
    assert sent[0]["params"]["messages"] == [{"role": "user", "content": "question 0"}]
    assert sent[0]["params"]["max_tokens"] == 256  # the model's default
    assert sent[1]["params"]["max_tokens"] == 32
    assert all(r["params"]["model"] == MODEL for r in sent)

    clock.advance(2.0)
    assert provider.poll_status(created.provider_batch_id).normalized_status is (
        NormalizedStatus.IN_PROGRESS)
    with pytest.raises(TransientProviderError) as early:
        provider.fetch_results(created.provider_batch_id)
    assert early.value.code == "not_finished"
    clock.advance(2.0)
    ended = provider.poll_status(created.provider_batch_id)
    assert (ended.provider_status, ended.normalized_status) == ("ended",
                                                                NormalizedStatus.COMPLETED)
    assert ended.request_counts.total == ended.request_counts.completed == 6

    file_order = [json.loads(line)["custom_id"] for line in server.state.results(
        created.provider_batch_id).decode().splitlines()]
    assert file_order != sorted(file_order)  # shuffled by the fake
    with provider.fetch_results(created.provider_batch_id,
                                expected_custom_ids=prepared.custom_ids) as fetched:
        rows = list(fetched)
        directory = fetched._directory  # a temporary one, removed at close
        assert directory.exists()
    assert not directory.exists()
    assert {row.custom_id for row in rows} == set(prepared.custom_ids)
    by_id = {row.custom_id: row for row in rows}
    for n in range(6):
        row = by_id[f"item-{n}"]
        assert row.is_success and row.output_text == f"echo: question {n}"
        assert row.raw_line is not None and json.loads(row.raw_line) == row.output_data
        assert row.prompt_tokens and row.completion_tokens
        assert row.total_tokens == row.prompt_tokens + row.completion_tokens
    assert ("POST /v1/messages/batches", "200") in calls
    assert ("GET /v1/messages/batches/{id}/results", "200") in calls


def test_failed_lines__status_codes_decide_permanent_or_retry(
        serve: Serve, clock: ManualClock, tmp_path: Path) -> None:
    _, provider = serve()
    batch_id, prepared = _run(provider, clock, tmp_path, _item("bad", "x [fail:400]"),
                              _item("busy", "x [fail:529]"), _item("boom", "x [fail:500]"),
                              _item("ok", "fine"))
    rows = _rows(provider, batch_id, prepared)
    bad, busy, boom = rows["bad"], rows["busy"], rows["boom"]
    assert (bad.status_code, bad.error_code) == (400, "invalid_request_error")
    assert bad.error_message == "The request failed with HTTP 400."
    assert (busy.status_code, busy.error_code) == (529, "overloaded_error")
    assert (boom.status_code, boom.error_code) == (500, "api_error")
    assert classify(bad, 1, 3).outcome is Outcome.FAILED
    assert classify(busy, 1, 3).outcome is Outcome.RETRY
    assert classify(boom, 1, 3).outcome is Outcome.RETRY
    assert rows["ok"].is_success
    status = provider.poll_status(batch_id)
    assert (status.request_counts.completed, status.request_counts.failed) == (1, 3)


def test_cancel__canceled_lines_and_a_cancel_after_the_end(
        serve: Serve, clock: ManualClock, tmp_path: Path) -> None:
    _, provider = serve()
    prepared = _prepare(provider, tmp_path, *(_item(f"i{n}", "x") for n in range(4)))
    batch_id = provider.create_batch_inline(prepared).provider_batch_id
    clock.advance(1.5)  # i0 done
    canceling = provider.cancel(batch_id)
    assert canceling.provider_status == "canceling"
    assert provider.cancel_acknowledged(canceling.provider_status)
    assert canceling.normalized_status is NormalizedStatus.IN_PROGRESS
    clock.advance(1.0)
    ended = provider.poll_status(batch_id)
    assert ended.normalized_status is NormalizedStatus.CANCELLED
    assert (ended.request_counts.completed, ended.request_counts.failed) == (1, 3)
    again = provider.cancel(batch_id)  # the fake answers 400: already ended
    assert again.provider_status == "ended"
    rows = _rows(provider, batch_id, prepared)
    assert rows["i0"].is_success
    for n in (1, 2, 3):
        row = rows[f"i{n}"]
        assert (row.error_code, row.status_code) == ("batch_cancelled", None)
        assert classify(row, 1, 3, batch_cancelled=True).outcome is Outcome.CANCELLED


def test_expired__lines_expired_and_the_batch_failed_with_results(
        serve: Serve, clock: ManualClock, tmp_path: Path) -> None:
    _, provider = serve(expiry_seconds=10.0)
    prepared = _prepare(provider, tmp_path, _item("quick", "x"), _item("stuck", "x [slow]"))
    batch_id = provider.create_batch_inline(prepared).provider_batch_id
    clock.advance(10.0)
    status = provider.poll_status(batch_id)
    assert status.normalized_status is NormalizedStatus.FAILED
    assert not provider.failed_validation(status.provider_status)
    rows = _rows(provider, batch_id, prepared)
    assert rows["quick"].is_success
    assert (rows["stuck"].error_code, rows["stuck"].status_code) == ("batch_expired", None)
    assert classify(rows["stuck"], 1, 3).outcome is Outcome.RETRY


def test_usage__cache_tokens_counted_in_the_prompt(
        serve: Serve, clock: ManualClock, tmp_path: Path) -> None:
    _, provider = serve()
    batch_id, prepared = _run(provider, clock, tmp_path, _item("u", "x [usage:120,30,100,7]"))
    row = _rows(provider, batch_id, prepared)["u"]
    assert (row.prompt_tokens, row.cached_tokens, row.completion_tokens, row.total_tokens,
            row.reasoning_tokens) == (227, 100, 30, 257, None)


def test_results_not_found__right_after_the_end_then_fine_and_the_file_is_reused(
        serve: Serve, clock: ManualClock, tmp_path: Path) -> None:
    server, provider = serve(results_not_found_seconds=5.0)
    batch_id, prepared = _run(provider, clock, tmp_path, _item("a", "x"),
                              _item("b", "y"))
    directory = tmp_path / "results"
    with pytest.raises(ResultsNotReady) as caught:
        provider.fetch_results(batch_id, expected_custom_ids=prepared.custom_ids,
                               directory=directory)
    assert (caught.value.status_code, caught.value.code) == (404, "results_not_found")
    assert list(directory.iterdir()) == []
    lenient = _rows(provider, batch_id, prepared, directory, skip_unavailable=True)
    assert {row.error_code for row in lenient.values()} == {"missing_result"}
    clock.advance(5.0)
    rows = _rows(provider, batch_id, prepared, directory)
    assert all(row.is_success for row in rows.values()) and len(rows) == 2
    downloads = server.count_requests("GET", "*/results")
    assert len(_rows(provider, batch_id, prepared, directory)) == 2
    assert server.count_requests("GET", "*/results") == downloads  # the verified file reused


@pytest.mark.parametrize("kind,code", [("truncate", "corrupt_download"),
                                       ("short", "short_download")])
def test_cut_download__results_not_ready_then_downloaded_again(
        serve: Serve, clock: ManualClock, tmp_path: Path, kind: str, code: str) -> None:
    server, provider = serve()
    batch_id, prepared = _run(provider, clock, tmp_path,
                              *(_item(f"i{n}", "x") for n in range(5)))
    directory = tmp_path / "results"
    server.add_fault(Fault("GET", "*/results", kind=kind))
    with pytest.raises(ResultsNotReady) as caught:
        provider.fetch_results(batch_id, expected_custom_ids=prepared.custom_ids,
                               directory=directory)
    assert caught.value.code == code
    assert list(directory.iterdir()) == []  # the partial file is gone
    rows = _rows(provider, batch_id, prepared, directory)
    assert len(rows) == 5 and all(row.is_success for row in rows.values())


def test_cut_download__skip_unavailable_keeps_the_lines_that_parse(
        serve: Serve, clock: ManualClock, tmp_path: Path) -> None:
    server, provider = serve()
    batch_id, prepared = _run(provider, clock, tmp_path,
                              *(_item(f"i{n}", "x") for n in range(5)))
    server.add_fault(Fault("GET", "*/results", kind="truncate"))
    rows = _rows(provider, batch_id, prepared, skip_unavailable=True)
    assert len(rows) == 5
    assert sum(row.is_success for row in rows.values()) == 4
    assert sum(row.error_code == "missing_result" for row in rows.values()) == 1


def test_create_errors__429_with_retry_after_529_transient_401_permanent(
        serve: Serve, tmp_path: Path) -> None:
    server, provider = serve()
    prepared = _prepare(provider, tmp_path, _item("a", "x"))
    server.add_fault(Fault("POST", "/v1/messages/batches", status=429,
                           headers={"retry-after": "7"}))
    with pytest.raises(TransientProviderError) as limited:
        provider.create_batch_inline(prepared)
    assert (limited.value.status_code, limited.value.retry_after,
            limited.value.code) == (429, 7.0, "rate_limit_error")
    server.add_fault(Fault("POST", "/v1/messages/batches", status=529))
    with pytest.raises(TransientProviderError) as overloaded:
        provider.create_batch_inline(prepared)
    assert (overloaded.value.status_code, overloaded.value.code) == (529, "overloaded_error")
    assert server.count_requests("POST", "/v1/messages/batches") == 2  # never retried
    assert server.batches == {}
    _, stranger = serve(config={"api_key": "sk-ant-wrong-key-000000"})
    stranger_prepared = _prepare(stranger, tmp_path, _item("a", "x"))
    with pytest.raises(PermanentProviderError) as refused:
        stranger.create_batch_inline(stranger_prepared)
    assert not isinstance(refused.value, TransientProviderError)
    assert (refused.value.status_code, refused.value.code) == (401, "authentication_error")
    assert "sk-ant-wrong-key" not in refused.value.message


def test_poll_status__unknown_batch_is_404(serve: Serve) -> None:
    _, provider = serve()
    with pytest.raises(PermanentProviderError) as caught:
        provider.poll_status("msgbatch_nope")
    assert caught.value.status_code == 404


def test_connection_error__transient_and_observed(serve: Serve) -> None:
    server, provider = serve()
    calls: list[tuple[str, str]] = []
    provider.call_observer = lambda endpoint, outcome: calls.append((endpoint, outcome))
    server.add_fault(Fault("GET", "/v1/messages/batches/*", kind="drop_before"))
    with pytest.raises(TransientProviderError) as caught:
        provider.poll_status("msgbatch_x")
    assert caught.value.code == "connection_error"
    assert calls == [("GET /v1/messages/batches/{id}", "connection_error")]


def test_provider_time__reads_the_fake_clock_from_the_date_header(
        serve: Serve, clock: ManualClock) -> None:
    _, provider = serve()
    assert provider.provider_time() == int(clock())
    clock.advance(3600.0)
    assert provider.provider_time() == int(clock())
    assert email.utils.formatdate(clock(), usegmt=True)  # the header's format


def test_list_batches__newest_first_across_pages(
        serve: Serve, clock: ManualClock, tmp_path: Path) -> None:
    _, provider = serve()
    provider.list_page_size = 2
    ids = []
    for n in range(3):
        ids.append(provider.create_batch_inline(
            _prepare(provider, tmp_path, _item(f"i{n}", "x"))).provider_batch_id)
        clock.advance(1.0)
    assert [b.provider_batch_id for b in provider.list_batches()] == ids[::-1]
    assert provider.find_batches_by_metadata("tracker_batch_id", "x") == []


def test_invalid_item_ids__sent_under_valid_wire_ids_and_joined_back(
        serve: Serve, clock: ManualClock, tmp_path: Path) -> None:
    server, provider = serve()
    odd = ["doc/7.txt", "é" * 70, "with space", "ok_id"]
    batch_id, prepared = _run(provider, clock, tmp_path, *(_item(i, i) for i in odd))
    wire = [provider.wire_custom_id(i) for i in odd]
    assert list(prepared.custom_ids) == wire == server.batch_custom_ids(batch_id)
    assert wire[3] == "ok_id" and all(w != i for w, i in zip(wire[:3], odd[:3], strict=True))
    rows = _rows(provider, batch_id, prepared)
    assert set(rows) == set(wire)
    assert rows[provider.wire_custom_id("doc/7.txt")].output_text == "echo: doc/7.txt"


def test_batch_too_large__at_the_line_limit(serve: Serve, tmp_path: Path) -> None:
    _, provider = serve()
    provider.max_lines_per_batch = 3
    with pytest.raises(BatchTooLarge) as caught:
        _prepare(provider, tmp_path, *(_item(f"i{n}", "x") for n in range(5)))
    assert caught.value.fits == 3
    assert list(tmp_path.iterdir()) == []
    assert _prepare(provider, tmp_path, *(_item(f"i{n}", "x") for n in range(3))).line_count == 3


def test_environment__anthropic_base_url_and_key_variable_used_when_the_config_names_none(
        clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixed names: with no `base_url`, the SDK's own ANTHROPIC_BASE_URL; with no key,
    the variable `api_key_env` names (ANTHROPIC_API_KEY by default)."""
    with FakeAnthropic(clock=clock, api_key="sk-ant-env-0123456789") as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env-0123456789")
        provider = registry.create_provider("anthropic", {"max_retries": 0})
        assert list(provider.list_batches()) == []
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        monkeypatch.setenv("CLAUDE_KEY", "sk-ant-env-0123456789")
        named = registry.create_provider("anthropic", {"api_key_env": "CLAUDE_KEY",
                                                       "max_retries": 0})
        assert named.provider_time() is not None
        with pytest.raises(PermanentProviderError, match="ANTHROPIC_API_KEY"):
            registry.create_provider("anthropic", {})
