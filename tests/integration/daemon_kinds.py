"""Per provider kind, what the tests of `tracker run` as a real process (test_crash,
test_chaos) need to know: the fake server to start, the config and environment the daemon is
given, the paths faults are set on, how the fake's executions log names a success and how to
read a provider batch's final state. The tests are parametrized over `KINDS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tracker.testing.fake_anthropic import FakeAnthropic
from tracker.testing.fake_openai import FakeOpenAI

#: Every crash point of `tracker.crashpoints` the restart tests kill the daemon at.
CRASH_POINTS = ("after_pack", "after_upload", "before_create_call", "after_create",
                "mid_ingest", "after_ingest")
#: A provider batch's state at its end, as `DaemonKind.final_status` names it.
FINAL = ("completed", "cancelled", "failed", "expired")


@dataclass(frozen=True)
class DaemonKind:
    #: The provider kind (and the test id).
    name: str
    #: The provider section's name in the daemon's config.
    provider: str
    model: str
    #: The fake's module (`python -m MODULE` runs it as a program).
    module: str
    #: The result type the fake's `executions` log gives a request that ran successfully.
    succeeded: str
    #: Fault paths: the create, a batch's retrieve (and, by fnmatch, whatever is under it),
    #: the results download.
    create_path: str
    batch_path: str
    results_path: str
    #: Crash points this kind never reaches (no such step), with the reason.
    skipped_points: tuple[tuple[str, str], ...]
    #: The fake server, with fast defaults for real-time tests (overridable).
    make_fake: Callable[..., Any]
    _section: Callable[[str], str]
    _model_lines: str
    _env: Callable[[str], dict[str, str]]
    _final_status: Callable[[dict[str, Any]], str | None]

    def __str__(self) -> str:
        return self.name

    def config_yaml(self, base_url: str, max_prompts: int, list_lag_grace: float) -> str:
        """The daemon's `llm_config.yaml`: one provider of this kind, one model."""
        return (f"batch:\n  providers:\n    {self.provider}:\n"
                f"      list_lag_grace: {list_lag_grace}\n{self._section(base_url)}"
                "      models:\n"
                f"        - name: {self.model}\n          mode: chat\n"
                f"          max_prompts_per_batch: {max_prompts}\n{self._model_lines}")

    def env(self, base_url: str) -> dict[str, str]:
        """The environment variables the daemon needs for the fake of `base_url`."""
        return self._env(base_url)

    def final_status(self, fake: Any, batch_id: str) -> str | None:
        """The provider batch's end as one of `FINAL`, or None while it runs."""
        return self._final_status(fake.get_batch(batch_id))

    def crash_points(self) -> list[Any]:
        """`CRASH_POINTS` as `pytest.param`s of (kind, point), the ones this kind never
        reaches skipped with the reason."""
        import pytest

        skipped = dict(self.skipped_points)
        return [pytest.param(self, point, id=f"{self.name}-{point}",
                             marks=[pytest.mark.skip(reason=skipped[point])]
                             if point in skipped else [])
                for point in CRASH_POINTS]


def _openai_final(batch: dict[str, Any]) -> str | None:
    status = str(batch["status"])
    return status if status in FINAL else None


def _anthropic_final(batch: dict[str, Any]) -> str | None:
    if batch["processing_status"] != "ended":
        return None
    if batch["cancel_initiated_at"] is not None:
        return "cancelled"
    return "expired" if batch["request_counts"]["expired"] else "completed"


OPENAI = DaemonKind(
    name="openai", provider="openai", model="gpt-5-mini",
    module="tracker.testing.fake_openai", succeeded="success",
    create_path="/v1/batches", batch_path="/v1/batches/*",
    results_path="/v1/files/*/content", skipped_points=(),
    make_fake=lambda **options: FakeOpenAI(**{
        "validating_seconds": 0.1, "in_progress_seconds": 0.3, "finalizing_seconds": 0.1,
        **options}),
    _section=lambda base_url: "",
    _model_lines="          pricing_tier: batch\n",
    _env=lambda base_url: {"OPENAI_API_KEY": "sk-crash-test-0123456789",
                           "OPENAI_BASE_URL": base_url},
    _final_status=_openai_final,
)

ANTHROPIC = DaemonKind(
    name="anthropic", provider="claude", model="claude-sonnet-4-5",
    module="tracker.testing.fake_anthropic", succeeded="succeeded",
    create_path="/v1/messages/batches", batch_path="/v1/messages/batches/*",
    results_path="/v1/messages/batches/*/results",
    skipped_points=(("after_upload", "anthropic requests go inline in the create: there is "
                                     "no upload"),),
    make_fake=lambda **options: FakeAnthropic(**{
        "in_progress_seconds": 0.5, "canceling_seconds": 0.1, **options}),
    _section=lambda base_url: f"      kind: anthropic\n      base_url: {base_url}\n",
    _model_lines="          max_tokens: 64\n",  # Anthropic requires one on every request
    _env=lambda base_url: {"ANTHROPIC_API_KEY": "sk-ant-crash-test-0123456789"},
    _final_status=_anthropic_final,
)

KINDS = (OPENAI, ANTHROPIC)
