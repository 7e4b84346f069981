"""Provider registry: `create_provider("openai", config)`; others plug in by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tracker.errors import UnknownProvider
from tracker.providers.base import BaseBatchProvider

ProviderFactory = Callable[[Mapping[str, Any]], BaseBatchProvider]

_factories: dict[str, ProviderFactory] = {}


def register_provider(name: str, factory: ProviderFactory, *, replace: bool = False) -> None:
    """Make `factory(config)` available as provider `name`."""
    if name in _factories and not replace and _factories[name] is not factory:
        raise ValueError(f"provider {name!r} is already registered")
    _factories[name] = factory


def known_providers() -> list[str]:
    return sorted(_factories)


def provider_class(name: str) -> type[BaseBatchProvider]:
    """The class registered as `name` (its class attributes, such as the per-batch limits,
    are readable without credentials); the base class when the factory is not a class."""
    factory = _factories.get(name)
    if isinstance(factory, type) and issubclass(factory, BaseBatchProvider):
        return factory
    return BaseBatchProvider


def create_provider(name: str, config: Mapping[str, Any] | None = None) -> BaseBatchProvider:
    """A new provider instance; an unknown name raises `UnknownProvider` listing the known ones."""
    try:
        factory = _factories[name]
    except KeyError:
        raise UnknownProvider(name, known_providers()) from None
    return factory(config or {})


def _register_builtin() -> None:
    from tracker.providers.openai import OpenAIBatchProvider

    register_provider("openai", OpenAIBatchProvider)


_register_builtin()
