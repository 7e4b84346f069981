"""One provider contract, run against every provider kind through its real SDK over HTTP.

Each kind is built the same way (`create_provider(kind, {api_key, base_url, max_retries: 0})`
on its fake server, on a manual clock shared with the fake) and differs only in the small
adapter `Kind` below: how a batch is created, its model, the fake's fault paths, its
provider words, its expiry option, the fake's word for a line that ran. Every test states one
property of `BaseBatchProvider` and checks it for both kinds; nothing sleeps.

Both fakes run lines on the same schedule: line i of n ends at created + 1 + 2(i+1)/n for
OpenAI (1 s validating, 2 s in progress, 1 s finalizing) and at created + 3(i+1)/n for
Anthropic (3 s in progress), so 1.7 s after the create the first of three lines has ended on
both and the second on neither.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tracker.providers.base import (
    BaseBatchProvider,
    NormalizedStatus,
    PermanentProviderError,
    PreparedBatch,
    ProviderBatch,
    ProviderResultRow,
    ResultsNotReady,
    TransientProviderError,
)
from tracker.providers.registry import create_provider
from tracker.retry import CANCELLED_LINE_CODES, Outcome, classify, is_permanent_line
from tracker.testing.fake_anthropic import FakeAnthropic
from tracker.testing.fake_http import FakeHttpServer, Fault
from tracker.testing.fake_openai import FakeOpenAI, ManualClock

KINDS = ("openai", "anthropic")
#: The fakes' expiry (OpenAI's completion window, Anthropic's 24 hours), shortened.
EXPIRY_SECONDS = 20.0
#: How long a not-ready switch hides a batch's results after it ends.
NOT_READY_SECONDS = 5.0
#: Polls `run_to_end` makes (0.5 s apart on the clock) before it gives up.
MAX_POLLS = 200

S, P, C, F, X = (NormalizedStatus.SUBMITTED, NormalizedStatus.IN_PROGRESS,
                 NormalizedStatus.COMPLETED, NormalizedStatus.FAILED,
                 NormalizedStatus.CANCELLED)
#: The statuses a batch may show before it ends (in this order).
BEFORE_END = (S, P)


@dataclass(frozen=True)
class Kind:
    """What differs between the provider kinds (everything else is the same contract)."""

    name: str
    model: str
    #: Whether the requests go in the create call (no input file to upload first).
    inline: bool
    #: The fake's paths (fnmatch) of the batch create and of a results download.
    create_path: str
    results_path: str
    #: The field of the fake's batch JSON holding the provider's own status word.
    status_field: str
    #: The provider words each normalized status may come from.
    words: Mapping[NormalizedStatus, frozenset[str]]
    #: The provider's word for a running batch being cancelled, and for an expired one.
    cancelling_word: str
    expired_word: str
    #: The fake's word in `executions` for a line that ran and succeeded.
    succeeded: str
    #: The fake's live switches that hide an ended batch's results for a while.
    not_ready_switches: tuple[str, ...]
    unknown_batch_id: str
    key: str
    wrong_key: str


OPENAI = Kind(
    name="openai", model="gpt-4o-mini", inline=False, create_path="/v1/batches",
    results_path="/v1/files/*/content", status_field="status",
    words={S: frozenset({"validating"}), P: frozenset({"in_progress", "finalizing",
                                                       "cancelling"}),
           C: frozenset({"completed"}), F: frozenset({"failed", "expired"}),
           X: frozenset({"cancelled"})},
    cancelling_word="cancelling", expired_word="expired", succeeded="success",
    not_ready_switches=("late_files_seconds", "file_not_found_seconds"),
    unknown_batch_id="batch_does_not_exist", key="sk-test-0123456789",
    wrong_key="sk-wrong-key-0123456789")
ANTHROPIC = Kind(
    name="anthropic", model="claude-sonnet-4-5", inline=True,
    create_path="/v1/messages/batches", results_path="/v1/messages/batches/*/results",
    status_field="processing_status",
    words={P: frozenset({"in_progress", "canceling"}), C: frozenset({"ended"}),
           F: frozenset({"ended"}), X: frozenset({"ended"})},
    cancelling_word="canceling", expired_word="ended", succeeded="succeeded",
    not_ready_switches=("results_not_found_seconds",),
    unknown_batch_id="msgbatch_01doesnotexist", key="sk-ant-test-0123456789",
    wrong_key="sk-ant-wrong-key-0123456789")


@dataclass
class Contract:
    """One kind's fake server, its provider (built by the registry) and the adapters."""

    kind: Kind
    server: FakeOpenAI | FakeAnthropic
    provider: BaseBatchProvider
    clock: ManualClock
    tmp_path: Path

    def prepare(self, *texts: str) -> PreparedBatch:
        """A batch of one chat item per text, with ids `request-1`, `request-2`, ..."""
        items = [{"id": f"request-{n}", "input_payload": {
            "messages": [{"role": "user", "content": text}], "max_tokens": 50}}
            for n, text in enumerate(texts, start=1)]
        return self.provider.prepare_payloads(items, self.kind.model, "chat",
                                              directory=self.tmp_path)

    def create(self, prepared: PreparedBatch) -> ProviderBatch:
        """Create the batch as the kind does: inline, or upload and create (`submit`)."""
        if self.provider.sends_requests_inline:
            return self.provider.create_batch_inline(prepared)
        return self.provider.submit(prepared).status

    def start(self, *texts: str) -> tuple[str, PreparedBatch]:
        prepared = self.prepare(*texts)
        return self.create(prepared).provider_batch_id, prepared

    def run_to_end(self, batch_id: str) -> list[ProviderBatch]:
        """Poll, moving the clock 0.5 s between polls, until the batch is terminal; every
        status read, each checked against the fake's own word at that moment."""
        seen: list[ProviderBatch] = []
        for _ in range(MAX_POLLS):
            status = self.provider.poll_status(batch_id)
            assert status.provider_status == self.raw_status(batch_id)
            seen.append(status)
            if status.is_terminal:
                return seen
            self.clock.advance(0.5)
        raise AssertionError(f"batch never ended: {[s.provider_status for s in seen]}")

    def rows(self, batch_id: str, prepared: PreparedBatch) -> dict[str, ProviderResultRow]:
        """The result rows by item id (`request-N`), one per item."""
        with self.provider.fetch_results(batch_id,
                                         expected_custom_ids=prepared.custom_ids) as fetched:
            rows = list(fetched)
        by_wire = {row.custom_id: row for row in rows}
        assert len(by_wire) == len(rows), "one row per request"
        item_ids = [f"request-{n}" for n in range(1, prepared.line_count + 1)]
        assert set(by_wire) == {self.provider.wire_custom_id(i) for i in item_ids}
        return {i: by_wire[self.provider.wire_custom_id(i)] for i in item_ids}

    def raw_status(self, batch_id: str) -> str:
        """The provider's own status word, as the fake holds it."""
        return str(self.server.get_batch(batch_id)[self.kind.status_field])

    def executions(self, batch_id: str) -> dict[str, str]:
        """custom_id -> the fake's outcome word, for the lines of the batch that ended."""
        ran = [(custom_id, outcome) for batch, custom_id, outcome in self.server.executions
               if batch == batch_id]
        assert len({c for c, _ in ran}) == len(ran), f"a line ran twice: {ran}"
        return dict(ran)

    def wire(self, item_id: str) -> str:
        return self.provider.wire_custom_id(item_id)


def _provider(kind: Kind, server: FakeHttpServer, api_key: str) -> BaseBatchProvider:
    base_url = server.base_url  # OpenAI's ends in /v1, Anthropic's SDK adds it
    return create_provider(kind.name, {"api_key": api_key, "base_url": base_url,
                                       "max_retries": 0})


def _server(kind: Kind, clock: ManualClock) -> FakeOpenAI | FakeAnthropic:
    if kind.name == "openai":
        return FakeOpenAI(clock=clock, validating_seconds=1.0, in_progress_seconds=2.0,
                          finalizing_seconds=1.0, cancelling_seconds=1.0,
                          completion_window_seconds=EXPIRY_SECONDS)
    return FakeAnthropic(clock=clock, in_progress_seconds=3.0, canceling_seconds=1.0,
                         expiry_seconds=EXPIRY_SECONDS)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, clock: ManualClock,
         tmp_path: Path) -> Iterator[Contract]:
    adapter = {"openai": OPENAI, "anthropic": ANTHROPIC}[request.param]
    with _server(adapter, clock) as server:
        provider = _provider(adapter, server, adapter.key)
        assert provider.name == adapter.name
        assert provider.sends_requests_inline is adapter.inline
        yield Contract(adapter, server, provider, clock, tmp_path)


# -- 1. the seed's flow ------------------------------------------------------------------------


def test_flow__one_row_per_item_joined_by_custom_id_with_text_and_tokens(
        kind: Contract) -> None:
    texts = ("What is AI?", "Explain quantum computing", "What is machine learning?")
    prepared = kind.prepare(*texts)
    assert prepared.custom_ids == tuple(kind.wire(f"request-{n}") for n in (1, 2, 3))
    batch_id = kind.create(prepared).provider_batch_id
    assert kind.run_to_end(batch_id)[-1].normalized_status is C
    rows = kind.rows(batch_id, prepared)
    for n, text in enumerate(texts, start=1):
        row = rows[f"request-{n}"]
        assert row.custom_id == kind.wire(f"request-{n}")
        assert row.is_success and row.error_code is None
        assert row.output_text == f"echo: {text}"
        assert row.prompt_tokens and row.prompt_tokens > 0
        assert row.completion_tokens and row.completion_tokens > 0
        assert row.total_tokens == row.prompt_tokens + row.completion_tokens
    assert kind.executions(batch_id) == {
        kind.wire(f"request-{n}"): kind.kind.succeeded for n in (1, 2, 3)}


# -- 2. status mapping -------------------------------------------------------------------------


def test_status__normalized_from_submitted_or_in_progress_to_completed_in_the_providers_words(
        kind: Contract) -> None:
    prepared = kind.prepare("one", "two")
    created = kind.create(prepared)
    assert created.provider_status == kind.raw_status(created.provider_batch_id)
    seen = [created, *kind.run_to_end(created.provider_batch_id)]
    normalized = [s.normalized_status for s in seen]
    assert normalized[0] in BEFORE_END and normalized[-1] is C
    assert P in normalized  # the fake runs the batch for a while
    phases = [status for status, _ in itertools.groupby(normalized)]
    assert phases in ([S, P, C], [P, C]), phases  # forward only, each phase once
    assert [s.is_terminal for s in seen] == [False] * (len(seen) - 1) + [True]
    for status in seen:
        assert status.known_status
        assert status.provider_status in kind.kind.words[status.normalized_status], status
    assert seen[-1].request_counts.total == seen[-1].request_counts.completed == 2


# -- 3. partial failure ------------------------------------------------------------------------


def test_partial_failure__400_line_permanent_500_line_transient_others_succeed(
        kind: Contract) -> None:
    batch_id, prepared = kind.start("fine", "bad [fail:400]", "down [fail:500]")
    final = kind.run_to_end(batch_id)[-1]
    assert final.normalized_status is C  # failed lines do not fail the batch
    assert (final.request_counts.completed, final.request_counts.failed) == (1, 2)
    rows = kind.rows(batch_id, prepared)
    fine, bad, down = rows["request-1"], rows["request-2"], rows["request-3"]
    assert fine.is_success and fine.output_text == "echo: fine"
    assert (bad.is_success, bad.status_code) == (False, 400) and bad.error_message
    assert is_permanent_line(bad) and classify(bad, 1, 3).outcome is Outcome.FAILED
    assert (down.is_success, down.status_code) == (False, 500) and down.error_message
    assert not is_permanent_line(down) and classify(down, 1, 3).outcome is Outcome.RETRY


# -- 4. cancel ---------------------------------------------------------------------------------


def test_cancel__running_batch_ends_cancelled_keeping_finished_lines(kind: Contract) -> None:
    batch_id, prepared = kind.start("quick", "later", "stuck [slow]")
    kind.clock.advance(1.7)  # line 1 has ended, lines 2 and 3 have not (module docstring)
    cancelling = kind.provider.cancel(batch_id)
    assert cancelling.provider_status == kind.kind.cancelling_word
    assert not cancelling.is_terminal
    assert kind.provider.cancel_acknowledged(cancelling.provider_status)
    final = kind.run_to_end(batch_id)[-1]
    assert final.normalized_status is X
    assert (final.request_counts.completed, final.request_counts.failed) == (1, 2)
    rows = kind.rows(batch_id, prepared)
    assert rows["request-1"].is_success and rows["request-1"].output_text == "echo: quick"
    for item_id in ("request-2", "request-3"):
        row = rows[item_id]
        assert not row.is_success and row.error_code in CANCELLED_LINE_CODES, row
        assert classify(row, 1, 3, batch_cancelled=True).outcome is Outcome.CANCELLED
    ran = kind.executions(batch_id)
    assert ran[kind.wire("request-1")] == kind.kind.succeeded
    assert kind.kind.succeeded not in (ran[kind.wire("request-2")], ran[kind.wire("request-3")])


def test_cancel__of_an_ended_batch_returns_its_status_instead_of_raising(
        kind: Contract) -> None:
    done_id, _ = kind.start("one", "two")
    assert kind.run_to_end(done_id)[-1].normalized_status is C
    again = kind.provider.cancel(done_id)
    assert (again.provider_batch_id, again.normalized_status) == (done_id, C)
    assert again.provider_status == kind.raw_status(done_id)

    cancelled_id, _ = kind.start("quick", "stuck [slow]")
    kind.provider.cancel(cancelled_id)
    assert kind.run_to_end(cancelled_id)[-1].normalized_status is X
    twice = kind.provider.cancel(cancelled_id)
    assert (twice.provider_batch_id, twice.normalized_status) == (cancelled_id, X)
    assert twice.provider_status == kind.raw_status(cancelled_id)


# -- 5. expiry ---------------------------------------------------------------------------------


def test_expiry__batch_past_its_window_fails_keeping_finished_lines_the_rest_expired(
        kind: Contract) -> None:
    started = kind.clock()
    batch_id, prepared = kind.start("quick", "stuck [slow]")
    seen = kind.run_to_end(batch_id)
    final = seen[-1]
    assert final.normalized_status is F
    assert final.provider_status == kind.kind.expired_word
    assert all(s.normalized_status in BEFORE_END for s in seen[:-1])
    assert kind.clock() - started >= EXPIRY_SECONDS  # it ran until the expiry, not before
    assert not kind.provider.failed_validation(final.provider_status)
    rows = kind.rows(batch_id, prepared)
    assert rows["request-1"].is_success and rows["request-1"].output_text == "echo: quick"
    stuck = rows["request-2"]
    assert (stuck.is_success, stuck.error_code, stuck.status_code) == (
        False, "batch_expired", None)
    assert classify(stuck, 1, 3).outcome is Outcome.RETRY


# -- 6. error classes --------------------------------------------------------------------------


def test_errors__create_429_is_transient_with_retry_after_from_the_header(
        kind: Contract) -> None:
    prepared = kind.prepare("one")
    kind.server.add_fault(Fault("POST", kind.kind.create_path, status=429,
                                headers={"retry-after": "7"}))
    with pytest.raises(TransientProviderError) as caught:
        kind.create(prepared)
    assert (caught.value.status_code, caught.value.retry_after) == (429, 7.0)
    assert kind.server.count_requests("POST", kind.kind.create_path) == 1  # not retried
    assert kind.server.batches == {}


@pytest.mark.parametrize("status", [500, 529])
def test_errors__create_5xx_is_transient(kind: Contract, status: int) -> None:
    prepared = kind.prepare("one")
    kind.server.add_fault(Fault("POST", kind.kind.create_path, status=status))
    with pytest.raises(TransientProviderError) as caught:
        kind.create(prepared)
    assert caught.value.status_code == status
    assert kind.server.count_requests("POST", kind.kind.create_path) == 1  # not retried
    assert kind.server.batches == {}
    assert kind.create(prepared).provider_batch_id in kind.server.batches  # the fault is gone


def test_errors__bad_key_is_permanent_and_the_key_is_not_in_the_message(
        kind: Contract) -> None:
    kind.server.api_key = kind.kind.key
    stranger = _provider(kind.kind, kind.server, kind.kind.wrong_key)
    prepared = stranger.prepare_payloads(
        [{"id": "request-1", "input_payload": {
            "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}}],
        kind.kind.model, "chat", directory=kind.tmp_path)
    calls = [lambda: stranger.poll_status(kind.kind.unknown_batch_id),
             lambda: (stranger.create_batch_inline(prepared) if stranger.sends_requests_inline
                      else stranger.submit(prepared))]
    for call in calls:
        with pytest.raises(PermanentProviderError) as caught:
            call()
        assert not isinstance(caught.value, TransientProviderError)
        assert caught.value.status_code == 401
        assert kind.kind.wrong_key not in str(caught.value)
        assert kind.kind.wrong_key not in caught.value.message
    # A server that echoes the key in its error message: the provider still keeps it out.
    kind.server.add_fault(Fault("GET", "*", status=401,
                                message=f"Incorrect API key provided: {kind.kind.wrong_key}"))
    with pytest.raises(PermanentProviderError) as echoed:
        stranger.poll_status(kind.kind.unknown_batch_id)
    assert echoed.value.status_code == 401
    assert kind.kind.wrong_key not in str(echoed.value)
    assert "Incorrect API key provided" in str(echoed.value)  # the message itself is kept


def test_errors__poll_of_an_unknown_batch_is_permanent_404(kind: Contract) -> None:
    with pytest.raises(PermanentProviderError) as caught:
        kind.provider.poll_status(kind.kind.unknown_batch_id)
    assert not isinstance(caught.value, TransientProviderError)
    assert caught.value.status_code == 404


# -- 7. results not ready right after the end --------------------------------------------------


def test_results__not_ready_right_after_the_end_then_fine(kind: Contract) -> None:
    for switch in kind.kind.not_ready_switches:
        setattr(kind.server, switch, NOT_READY_SECONDS)
        batch_id, prepared = kind.start("one", "two")
        final = kind.run_to_end(batch_id)[-1]
        assert final.normalized_status is C, switch
        with pytest.raises(ResultsNotReady):
            kind.rows(batch_id, prepared)
        kind.clock.advance(NOT_READY_SECONDS)
        rows = kind.rows(batch_id, prepared)
        assert [row.is_success for row in rows.values()] == [True, True], switch
        assert rows["request-2"].output_text == "echo: two"
        setattr(kind.server, switch, 0.0)


# -- 8. a cut-off download ---------------------------------------------------------------------


def test_results__truncated_download_is_not_ready_then_downloaded_again(
        kind: Contract) -> None:
    batch_id, prepared = kind.start("one", "two", "three")
    assert kind.run_to_end(batch_id)[-1].normalized_status is C
    kind.server.add_fault(Fault("GET", kind.kind.results_path, kind="truncate"))
    with pytest.raises(ResultsNotReady) as caught:
        kind.rows(batch_id, prepared)
    assert caught.value.code == "corrupt_download"
    assert kind.server.count_requests("GET", kind.kind.results_path) == 1
    rows = kind.rows(batch_id, prepared)
    assert all(row.is_success for row in rows.values()) and len(rows) == 3
    assert kind.server.count_requests("GET", kind.kind.results_path) == 2


# -- 9. listing --------------------------------------------------------------------------------


def test_list__shows_created_batches_newest_first(kind: Contract) -> None:
    older, _ = kind.start("one")
    kind.clock.advance(1.0)
    newer, _ = kind.start("two")
    listed = list(kind.provider.list_batches())
    assert [b.provider_batch_id for b in listed] == [newer, older]
    newest, oldest = (b.created_at for b in listed)
    assert newest is not None and oldest is not None and newest > oldest
