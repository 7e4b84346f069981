"""Load `llm_config.yaml` (the seed's `batch.providers.<name>.models[]` format) into typed objects.

Every error is one line naming the file, the YAML line and the key path, e.g.
`config/llm_config.yaml:7: batch.providers.openai.models[0].max_prompts_per_batch: ...`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tracker.config_path import LOCAL_CONFIG, PACKAGED_CONFIG, default_config_path
from tracker.errors import ConfigError

if TYPE_CHECKING:
    from tracker.providers.registry import KindTraits

__all__ = ["LOCAL_CONFIG", "PACKAGED_CONFIG", "TrackerConfig", "default_config_path",
           "load_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PricesConfig(_Strict):
    """Batch prices in US dollars per million tokens (read as written: 0.075 is exact)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    #: Prompt tokens read from the provider's cache; None: unknown (such tokens are then
    #: priced as unknown, not at the full input rate).
    cached_input: float | None = Field(default=None, ge=0)


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    #: The endpoint its requests go to: chat (/v1/chat/completions), embedding
    #: (/v1/embeddings), responses (/v1/responses) or completion (/v1/completions).
    mode: Literal["chat", "embedding", "responses", "completion"] = "chat"
    #: The most items one batch holds; at most the provider kind's own limit (OpenAI 50,000
    #: requests, Anthropic 100,000).
    max_prompts_per_batch: int = Field(default=50_000, ge=1, le=100_000)
    pricing_tier: Literal["batch"] = "batch"
    #: Cap on estimated prompt tokens in flight for this model (None: no cap).
    max_enqueued_tokens: int | None = Field(default=None, ge=1)
    #: Overrides the packaged price table (config/prices.yaml) for this model.
    prices_per_million: PricesConfig | None = None
    #: The most output tokens one request may produce (a budget's worst case for requests
    #: that set no max_tokens); overrides the packaged table.
    max_output_tokens: int | None = Field(default=None, ge=1)
    #: The max_tokens a request that sets none is sent with (Anthropic requires one).
    max_tokens: int | None = Field(default=None, ge=1)


#: The provider kind of a section that names none (and whose name is no kind).
DEFAULT_KIND = "openai"
#: Provider names: they label items, results and metrics.
PROVIDER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

#: Provider keys that steer the tracker, not the provider's client.
TRACKER_POLICY_KEYS = frozenset({"enabled", "max_attempts", "not_found_grace", "list_lag_grace",
                                 "delete_files", "kind"})


class ProviderConfig(_Strict):
    #: Which API this provider speaks (a registered provider kind); None: the section's own
    #: name if a kind has that name, else openai. Several sections may share a kind (e.g.
    #: `azure` and `together` beside `openai`, each with its own base_url and key).
    kind: str | None = None
    enabled: bool = True
    models: list[ModelConfig] = Field(default_factory=list)
    api_key: str | None = None
    #: The environment variable holding the key, so the file need not hold it.
    api_key_env: str | None = None
    base_url: str | None = None
    max_attempts: int = Field(default=3, ge=1, le=100)
    max_retries: int = Field(default=2, ge=0, le=10)
    timeout: float = Field(default=120.0, gt=0)
    organization: str | None = None
    project: str | None = None
    #: Seconds a 404 (batch or result file) or a result file the counts promise but the batch
    #: does not name yet is taken as a delay, from the last good answer or the batch's end.
    not_found_grace: float = Field(default=3600.0, ge=0)
    #: Seconds after a create whose answer was lost before creating again: the provider's
    #: list may show a new batch this late.
    list_lag_grace: float = Field(default=60.0, ge=0)
    #: When a batch's files at the provider are deleted: once it is ingested (its input file,
    #: and its output and error files, downloaded and stored by then), or never.
    delete_files: Literal["after_ingest", "never"] = "after_ingest"

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def client_options(self) -> dict[str, Any]:
        """The dict `registry.create_provider(name, ...)` takes."""
        options = self.model_dump(exclude=set(TRACKER_POLICY_KEYS), exclude_none=True)
        options["models"] = [m.model_dump() for m in self.models]
        return options


class BatchSection(_Strict):
    #: Most US dollars the whole database may spend: billed plus the worst case of every
    #: batch in flight; a batch that would cross it waits (None: no limit).
    budget_usd: float | None = Field(default=None, ge=0)
    providers: dict[str, ProviderConfig]


class TrackerConfig(_Strict):
    batch: BatchSection
    source: str = "<defaults>"

    @property
    def providers(self) -> dict[str, ProviderConfig]:
        return self.batch.providers

    def kind_of(self, name: str) -> str:
        """The API provider `name` speaks: its `kind`, else its own name if a kind has that
        name, else openai."""
        from tracker.providers import registry

        section = self.provider(name)
        if section.kind:
            return section.kind
        return name if name in registry.known_providers() else DEFAULT_KIND

    def provider(self, name: str) -> ProviderConfig:
        try:
            return self.batch.providers[name]
        except KeyError:
            raise ConfigError(
                f"{self.source}: provider {name!r} is not configured under batch.providers "
                f"(configured: {', '.join(sorted(self.batch.providers)) or 'none'})"
            ) from None


def _key_path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _yaml_line(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the deepest node of `loc` that exists in the YAML."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _message(error: Any) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    return str(msg[0].lower() + msg[1:]) if msg else str(kind)


def load_config(path: str | os.PathLike[str] | None = None) -> TrackerConfig:
    """Read and validate the config; raise `ConfigError` with one clear line on any problem."""
    from tracker.providers import registry

    source = Path(path) if path is not None else default_config_path()
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read config: {exc}") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else str(source)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'batch' key at the top level")
    if "source" in data:
        raise ConfigError(f"{source}:{_yaml_line(root, ('source',))}: source: unknown key")
    try:
        config = TrackerConfig.model_validate({**data, "source": str(source)})
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error["loc"]
        line = _yaml_line(root, loc)
        where = f"{source}:{line}" if line else str(source)
        raise ConfigError(f"{where}: {_key_path(loc)}: {_message(error)}") from None
    for name, section in config.batch.providers.items():
        if not PROVIDER_NAME.fullmatch(name):
            line = _yaml_line(root, ("batch", "providers", name))
            raise ConfigError(f"{source}:{line}: batch.providers.{name!r}: a provider name is 1 "
                              "to 64 letters, digits, '_', '-' or '.'")
        if section.kind is not None and section.kind not in registry.known_providers():
            line = _yaml_line(root, ("batch", "providers", name, "kind"))
            raise ConfigError(
                f"{source}:{line}: batch.providers.{name}.kind: unknown kind {section.kind!r} "
                f"(known: {', '.join(registry.known_providers())})"
            )
        kind = config.kind_of(name)
        _check_models(source, root, name, section, kind, registry.traits(kind))
    return config


def _check_models(source: Path, root: yaml.Node | None, name: str, section: ProviderConfig,
                  kind: str, traits: KindTraits) -> None:
    """Each model's mode and batch size must be ones its provider's kind serves."""
    for index, model in enumerate(section.models):
        where = ("batch", "providers", name, "models", index)
        if traits.modes and model.mode not in traits.modes:
            line = _yaml_line(root, (*where, "mode"))
            raise ConfigError(
                f"{source}:{line}: batch.providers.{name}.models[{index}].mode: a "
                f"{kind}-kind provider serves {', '.join(traits.modes)}, not {model.mode}")
        if model.max_prompts_per_batch > traits.max_lines_per_batch:
            line = _yaml_line(root, (*where, "max_prompts_per_batch"))
            raise ConfigError(
                f"{source}:{line}: batch.providers.{name}.models[{index}]."
                f"max_prompts_per_batch: one {kind} batch holds at most "
                f"{traits.max_lines_per_batch} requests")
