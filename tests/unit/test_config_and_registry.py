"""Config loading (errors name file, line and key) and the provider registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tracker.config import PACKAGED_CONFIG, load_config
from tracker.errors import ConfigError, UnknownProvider
from tracker.providers import registry
from tracker.providers.base import BaseBatchProvider, PermanentProviderError
from tracker.providers.openai import OpenAIBatchProvider

GOOD = """\
batch:
  providers:
    openai:
      enabled: true
      models:
        - name: gpt-5-mini
          mode: chat
          max_prompts_per_batch: 20
          pricing_tier: batch
"""


def test_load_config__packaged_default() -> None:
    config = load_config(PACKAGED_CONFIG)
    openai = config.provider("openai")
    assert openai.enabled and openai.max_attempts == 3
    assert openai.model("gpt-5-mini").max_prompts_per_batch == 20


@pytest.mark.parametrize(
    "text,line,fragment",
    [
        (GOOD.replace("      models:", "     models:"), 5, "YAML syntax error"),
        (GOOD.replace("enabled: true", "kind: nope"), 4,
         "batch.providers.openai.kind: unknown kind 'nope'"),
        (GOOD.replace("openai:", "my host:"), 3, "batch.providers.'my host': a provider name is"),
        (GOOD.replace("enabled: true", "enabeld: true"), 4, "batch.providers.openai.enabeld: "
                                                            "unknown key"),
        (GOOD.replace("        - name: gpt-5-mini\n", "        - nick: gpt-5-mini\n"), 6,
         "models[0].name: required key is missing"),
        (GOOD.replace("enabled: true", 'enabled: "yes"'), 4, "openai.enabled: input should be"),
        (GOOD.replace("20", "0"), 8, "models[0].max_prompts_per_batch: input should be greater"),
        (GOOD.replace("20", "50001"), 8,
         "max_prompts_per_batch: one openai batch holds at most 50000"),
        (GOOD.replace("20", "100001"), 8, "max_prompts_per_batch: input should be less"),
        (GOOD.replace("mode: chat", "mode: images"), 7, "models[0].mode"),
        ("providers: {}\n", 1, "batch: required key is missing"),
        ("- 1\n", None, "expected a mapping"),
        (GOOD + "source: elsewhere\n", 10, "source: unknown key"),
    ],
)
def test_load_config__errors_name_file_line_and_key(tmp_path: Path, text: str,
                                                     line: int | None, fragment: str) -> None:
    path = tmp_path / "llm_config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}:" if line else f"{path}:")
    assert fragment in message


def test_load_config__an_anthropic_section_speaks_anthropic_with_a_max_tokens_default(
        tmp_path: Path) -> None:
    path = tmp_path / "llm_config.yaml"
    path.write_text(GOOD.replace("openai:", "anthropic:").replace(
        "gpt-5-mini", "claude-haiku-4-5").replace("pricing_tier: batch",
                                                  "pricing_tier: batch\n          max_tokens: 512"))
    config = load_config(path)
    assert config.kind_of("anthropic") == "anthropic"
    options = config.provider("anthropic").client_options()
    assert options["models"][0]["max_tokens"] == 512
    assert registry.provider_class("anthropic").max_lines_per_batch == 100_000


def test_load_config__missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_client_options__carry_models_and_key_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.replace("      enabled: true\n",
                                 "      enabled: true\n      api_key_env: MY_KEY\n"))
    options = load_config(path).provider("openai").client_options()
    assert options["api_key_env"] == "MY_KEY"
    assert options["models"][0]["name"] == "gpt-5-mini"


def test_create_provider__openai(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(registry.create_provider("openai", {"api_key": "sk-x"}),
                      OpenAIBatchProvider)
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    assert isinstance(registry.create_provider("openai", {"api_key_env": "MY_KEY"}),
                      OpenAIBatchProvider)


def test_create_provider__unknown_lists_known() -> None:
    with pytest.raises(UnknownProvider, match="unknown provider 'nope'; known providers: .*openai"):
        registry.create_provider("nope", {})


def test_create_provider__missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(PermanentProviderError, match="OPENAI_API_KEY"):
        registry.create_provider("openai", {})


class EchoProvider(BaseBatchProvider):
    name = "echo"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def prepare_payloads(self, items: Iterable[Mapping[str, Any]], model: str, mode: str,
                         **_: Any) -> Any:
        raise NotImplementedError

    submit = poll_status = fetch_results = cancel = prepare_payloads  # type: ignore[assignment]
    upload_input = create_batch = find_batches_by_metadata = prepare_payloads  # type: ignore


def test_register_provider__plugs_in_by_name() -> None:
    registry.register_provider("echo-test", EchoProvider)
    try:
        provider = registry.create_provider("echo-test", {"x": 1})
        assert isinstance(provider, EchoProvider) and provider.config == {"x": 1}
        assert "echo-test" in registry.known_providers()
        with pytest.raises(ValueError, match="already registered"):
            registry.register_provider("echo-test", OpenAIBatchProvider)
    finally:
        registry._factories.pop("echo-test", None)


def test_registry__traits_known_without_import_agree_with_each_class() -> None:
    """The config and enqueue read a kind's traits from the registry, not its class (which
    would load the kind's SDK): each registration must say what its class says."""
    for kind in registry.known_providers():
        provider = registry.provider_class(kind)
        assert registry.traits(kind) == registry.KindTraits(
            tuple(provider.endpoints), provider.max_lines_per_batch,
            provider.requires_max_tokens), kind
    assert registry.traits("anthropic").requires_max_tokens
