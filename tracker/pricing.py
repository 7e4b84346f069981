"""What tokens cost: batch prices per model, and exact decimal amounts.

Prices come from the model's `prices_per_million` in the config, else from the packaged table
`config/prices.yaml`; a model in neither has no price, and what it cost is unknown (`None`
here, "unknown" to a user), never zero. Amounts are `Decimal`s computed without rounding:
tokens x (dollars per million) x 10^-6 is exact in decimal.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.config import ModelConfig, TrackerConfig

PACKAGED_PRICES = Path(__file__).resolve().parent / "config" / "prices.yaml"
UNKNOWN = "unknown"
#: Enough digits that no sum of token counts times prices is ever rounded.
EXACT = decimal.Context(prec=60, traps=[decimal.Inexact, decimal.InvalidOperation])


def to_decimal(value: float | int | str) -> Decimal:
    """A price or budget as written in YAML or on a command line: 0.075 is 0.075 (a float's
    shortest repr is the text it was read from)."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens; `cached_input` None: unknown."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None


@dataclass(frozen=True)
class Usage:
    """Token counts of one or more result lines. `prompt` includes `cached`; `completion`
    includes `reasoning` (billed as output, so never added twice). `prompt` None: a line gave
    no usage, so what it cost is unknown."""

    prompt: int | None
    cached: int = 0
    completion: int = 0
    reasoning: int = 0


def cost(usage: Usage, price: Price | None) -> Decimal | None:
    """The exact cost of `usage` at `price`; None when it cannot be known."""
    if price is None or usage.prompt is None:
        return None
    if usage.cached and price.cached_input is None:
        return None
    cached_rate = price.cached_input if price.cached_input is not None else Decimal(0)
    with decimal.localcontext(EXACT):
        per_million = ((usage.prompt - usage.cached) * price.input + usage.cached * cached_rate
                       + usage.completion * price.output)
        return per_million.scaleb(-6)


def usd_text(amount: Decimal | None) -> str:
    """A decimal string with every digit kept (at least two after the point), or "unknown"."""
    if amount is None:
        return UNKNOWN
    text = format(amount.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


@dataclass(frozen=True)
class ModelLimits:
    price: Price | None
    max_output_tokens: int | None


class PriceBook:
    """Prices and output caps of every configured model (config first, then the packaged
    table; the packaged table holds OpenAI's models, so it serves the `openai` provider)."""

    def __init__(self, config: TrackerConfig) -> None:
        self._config = config
        self._found: dict[tuple[str, str], ModelLimits] = {}

    def limits(self, provider: str, model: str) -> ModelLimits:
        key = (provider, model)
        if key not in self._found:
            self._found[key] = self._look_up(provider, model)
        return self._found[key]

    def price(self, provider: str, model: str) -> Price | None:
        return self.limits(provider, model).price

    def _look_up(self, provider: str, model: str) -> ModelLimits:
        section = self._config.providers.get(provider)
        configured: ModelConfig | None = section.model(model) if section else None
        packaged = packaged_table().get(model, {}) if provider == "openai" else {}
        price = _price(configured.prices_per_million.model_dump()
                       if configured and configured.prices_per_million
                       else packaged.get("prices_per_million"))
        cap = (configured.max_output_tokens if configured and configured.max_output_tokens
               else packaged.get("max_output_tokens"))
        return ModelLimits(price, cap if isinstance(cap, int) else None)


def _price(entry: dict[str, Any] | None) -> Price | None:
    if not entry:
        return None
    cached = entry.get("cached_input")
    return Price(input=to_decimal(entry["input"]), output=to_decimal(entry["output"]),
                 cached_input=None if cached is None else to_decimal(cached))


@cache
def packaged_table() -> dict[str, dict[str, Any]]:
    import yaml

    loaded = yaml.safe_load(PACKAGED_PRICES.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}
