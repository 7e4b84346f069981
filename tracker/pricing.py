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
    from tracker.config import TrackerConfig

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


_CENT = Decimal("0.01")
_TEN_THOUSANDTH = Decimal("0.0001")


def shown_usd(amount: str | None) -> str:
    """A decimal string as dollars for the eye: cents from one dollar up, 4 decimals below,
    "<$0.0001" for less (never a zero that is not one); "unknown" stays "unknown", None is
    "-". The exact figure is in the --json output."""
    if amount is None:
        return "-"
    if amount == UNKNOWN:
        return UNKNOWN
    try:
        value = Decimal(amount)
    except decimal.InvalidOperation:
        return amount
    if 0 < abs(value) < _TEN_THOUSANDTH:
        return "<$0.0001"
    step = _CENT if value == 0 or abs(value) >= 1 else _TEN_THOUSANDTH
    return f"${value.quantize(step, rounding=decimal.ROUND_HALF_UP):,}"


@dataclass(frozen=True)
class ModelLimits:
    price: Price | None
    max_output_tokens: int | None
    #: The `max_tokens` a request that sets none is sent with (the model's `max_tokens`).
    default_max_tokens: int | None = None


#: Per (provider, model): its `prices_per_million` dict and `max_output_tokens`, as configured.
ConfiguredModels = dict[tuple[str, str], dict[str, Any]]


class PriceBook:
    """Prices and output caps of every configured model (config first, then the packaged
    table, which holds OpenAI's own prices: it serves the providers of kind openai that talk
    to OpenAI itself, i.e. with no `base_url` of their own; another host's prices go in its
    config), and the config's `batch.budget_usd`."""

    def __init__(self, config: TrackerConfig) -> None:
        limit = config.batch.budget_usd
        self._init({(provider, m.name): {
            "prices_per_million": m.prices_per_million.model_dump()
            if m.prices_per_million else None, "max_output_tokens": m.max_output_tokens,
            "max_tokens": m.max_tokens}
            for provider, section in config.providers.items() for m in section.models},
            None if limit is None else to_decimal(limit),
            {provider for provider, section in config.providers.items()
             if config.kind_of(provider) == "openai" and not section.base_url})

    def _init(self, configured: ConfiguredModels, budget_usd: Decimal | None,
              at_openai: set[str]) -> None:
        self._configured = configured
        self.budget_usd = budget_usd
        self._at_openai = at_openai
        self._found: dict[tuple[str, str], ModelLimits] = {}

    @classmethod
    def read(cls, path: Path) -> PriceBook:
        """The prices of a config file, read without validating the rest of it (the commands
        that only report start faster without pydantic); a file whose price keys are not
        plainly well-formed is loaded and validated in full instead, which names the fault."""
        import yaml

        try:
            book = cls.__new__(cls)
            book._init(*_price_keys(yaml.safe_load(path.read_text(encoding="utf-8"))))
            return book
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, TypeError,
                KeyError, AttributeError):
            from tracker.config import load_config

            return cls(load_config(path))

    @classmethod
    def packaged_only(cls) -> PriceBook:
        """The packaged table alone, and no budget (for reports when the config cannot be
        read)."""
        book = cls.__new__(cls)
        book._init({}, None, {"openai"})
        return book

    def limits(self, provider: str, model: str) -> ModelLimits:
        key = (provider, model)
        if key not in self._found:
            self._found[key] = self._look_up(provider, model)
        return self._found[key]

    def price(self, provider: str, model: str) -> Price | None:
        return self.limits(provider, model).price

    def _look_up(self, provider: str, model: str) -> ModelLimits:
        configured = self._configured.get((provider, model), {})
        packaged = packaged_table().get(model, {}) if provider in self._at_openai else {}
        price = _price(configured.get("prices_per_million")
                       or packaged.get("prices_per_million"))
        cap = configured.get("max_output_tokens") or packaged.get("max_output_tokens")
        default = configured.get("max_tokens")
        return ModelLimits(price, cap if isinstance(cap, int) else None,
                           default if isinstance(default, int) else None)


def _number(value: Any, *, whole: bool = False) -> Any:
    """`value` if it is a plain non-negative number (ValueError otherwise)."""
    kinds: tuple[type, ...] = (int,) if whole else (int, float)
    if type(value) not in kinds or value < 0:
        raise ValueError(value)
    return value


def _price_keys(data: Any) -> tuple[ConfiguredModels, Decimal | None, set[str]]:
    batch = data["batch"]
    from tracker.providers import registry

    configured: ConfiguredModels = {}
    at_openai: set[str] = set()
    for provider, section in batch["providers"].items():
        kind = (section or {}).get("kind") or (
            provider if provider in registry.known_providers() else "openai")
        if kind == "openai" and not (section or {}).get("base_url"):
            at_openai.add(str(provider))
        for model in (section or {}).get("models") or []:
            prices = model.get("prices_per_million")
            if prices is not None:
                prices = {key: _number(prices[key]) for key in ("input", "output")} | (
                    {"cached_input": _number(prices["cached_input"])}
                    if prices.get("cached_input") is not None else {})
            cap = model.get("max_output_tokens")
            configured[(str(provider), str(model["name"]))] = {
                "prices_per_million": prices,
                "max_output_tokens": None if cap is None else _number(cap, whole=True)}
    limit = batch.get("budget_usd")
    return configured, None if limit is None else to_decimal(_number(limit)), at_openai


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
