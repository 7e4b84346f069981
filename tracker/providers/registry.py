"""Provider registry: `create_provider("openai", config)`; others plug in by name.

The built-in providers are registered by import path and imported on first use, so a command
that builds no provider does not pay for loading its SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

from tracker.errors import UnknownProvider
from tracker.providers.base import BaseBatchProvider

ProviderFactory = Callable[[Mapping[str, Any]], BaseBatchProvider]

#: Each provider's factory, or the `"module:attribute"` path it is imported from on first use.
_factories: dict[str, ProviderFactory | str] = {}


def register_provider(name: str, factory: ProviderFactory | str, *,
                      replace: bool = False) -> None:
    """Make `factory(config)` available as provider `name`; `factory` may be the
    `"module:attribute"` path of one, imported when the provider is first needed."""
    if name in _factories and not replace and _factories[name] != factory and (
            isinstance(factory, str) or _factory(name) is not factory):
        raise ValueError(f"provider {name!r} is already registered")
    _factories[name] = factory


def known_providers() -> list[str]:
    return sorted(_factories)


def _factory(name: str) -> ProviderFactory:
    """The factory registered as `name`, imported now if it was registered by path."""
    factory = _factories[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = _factories[name] = getattr(import_module(module), attribute)
    return factory


def provider_class(name: str) -> type[BaseBatchProvider]:
    """The class registered as `name` (its class attributes, such as the per-batch limits,
    are readable without credentials); the base class when the factory is not a class."""
    factory = _factory(name) if name in _factories else None
    if isinstance(factory, type) and issubclass(factory, BaseBatchProvider):
        return factory
    return BaseBatchProvider


def create_provider(name: str, config: Mapping[str, Any] | None = None) -> BaseBatchProvider:
    """A new provider instance; an unknown name raises `UnknownProvider` listing the known ones."""
    if name not in _factories:
        raise UnknownProvider(name, known_providers())
    return _factory(name)(config or {})


register_provider("openai", "tracker.providers.openai:OpenAIBatchProvider")
