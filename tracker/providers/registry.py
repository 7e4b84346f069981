"""Provider registry: `create_provider("openai", config)`; others plug in by name.

The built-in providers are registered by import path and imported on first use, so a command
that builds no provider does not pay for loading its SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from tracker.errors import UnknownProvider
from tracker.providers.base import BaseBatchProvider

ProviderFactory = Callable[[Mapping[str, Any]], BaseBatchProvider]

#: Each provider's factory, or the `"module:attribute"` path to import it from when needed.
_factories: dict[str, ProviderFactory | str] = {}


@dataclass(frozen=True)
class KindTraits:
    """What the config and enqueue check against, known without importing the kind's module
    (a command that reads the config must not load an SDK); each repeats its class's
    attributes, and a test checks they agree."""

    #: The modes the kind serves (its class's `endpoints`).
    modes: tuple[str, ...]
    max_lines_per_batch: int
    requires_max_tokens: bool = False


_traits: dict[str, KindTraits] = {}


def _resolve(factory: ProviderFactory | str) -> ProviderFactory:
    if not isinstance(factory, str):
        return factory
    module, _, attribute = factory.partition(":")
    imported: ProviderFactory = getattr(import_module(module), attribute)
    return imported


def register_provider(name: str, factory: ProviderFactory | str, *,
                      replace: bool = False, traits: KindTraits | None = None) -> None:
    """Make `factory(config)` available as provider `name`; `factory` may be given as the
    `"module:attribute"` path of one, imported only when the provider is first needed (give
    its `traits` then, or they are read from the class when first asked for)."""
    current = _factories.get(name)
    if (current is not None and not replace and current != factory
            and _resolve(current) is not _resolve(factory)):
        raise ValueError(f"provider {name!r} is already registered")
    _factories[name] = factory
    if traits is not None:
        _traits[name] = traits
    else:
        _traits.pop(name, None)


def traits(name: str) -> KindTraits:
    """The kind's traits, from its registration, else from its class."""
    if name not in _traits:
        kind = provider_class(name)
        return KindTraits(tuple(kind.endpoints), kind.max_lines_per_batch,
                          kind.requires_max_tokens)
    return _traits[name]


def known_providers() -> list[str]:
    return sorted(_factories)


def provider_class(name: str) -> type[BaseBatchProvider]:
    """The class registered as `name` (its class attributes, such as the per-batch limits,
    are readable without credentials); the base class when the factory is not a class."""
    factory = _resolve(_factories[name]) if name in _factories else None
    if isinstance(factory, type) and issubclass(factory, BaseBatchProvider):
        return factory
    return BaseBatchProvider


def create_provider(name: str, config: Mapping[str, Any] | None = None) -> BaseBatchProvider:
    """A new provider instance; an unknown name raises `UnknownProvider` listing the known ones."""
    try:
        factory = _factories[name]
    except KeyError:
        raise UnknownProvider(name, known_providers()) from None
    return _resolve(factory)(config or {})


register_provider("openai", "tracker.providers.openai:OpenAIBatchProvider",
                  traits=KindTraits(("chat", "embedding", "responses", "completion"), 50_000))
register_provider("anthropic", "tracker.providers.anthropic:AnthropicBatchProvider",
                  traits=KindTraits(("chat",), 100_000, requires_max_tokens=True))
