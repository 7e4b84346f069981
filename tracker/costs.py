"""`tracker cost`: the ledger's tokens priced, grouped by job, model, day or batch.

Each group is priced per model and summed in exact decimal. A group with a model of unknown
price (or lines that gave no usage) costs "unknown"; so does the total then, while
`priced_usd` still sums what is known. Lines of duplicate provider batches are rows of kind
"waste": billed, counted in the total, and shown apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

from tracker.pricing import EXACT, PriceBook, Usage, cost, usd_text
from tracker.store.ledger import RESULT, WASTE, usage_by
from tracker.store.reader import Reader


@dataclass
class _Group:
    key: str
    kind: str
    usd: Decimal | None = Decimal(0)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    items: int = 0
    unpriced_models: set[str] = field(default_factory=set)

    def add(self, row: dict[str, Any], amount: Decimal | None) -> None:
        self.usd = None if amount is None or self.usd is None else self.usd + amount
        if amount is None:
            self.unpriced_models.add(f"{row['provider']}/{row['model']}")
        self.prompt_tokens += int(row["prompt_tokens"] or 0)
        self.cached_tokens += int(row["cached_tokens"] or 0)
        self.completion_tokens += int(row["completion_tokens"] or 0)
        self.reasoning_tokens += int(row["reasoning_tokens"] or 0)
        self.items += int(row["items"])

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "usd": usd_text(self.usd),
                "prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
                "completion_tokens": self.completion_tokens,
                "reasoning_tokens": self.reasoning_tokens, "items": self.items}


def row_cost(row: dict[str, Any], prices: PriceBook) -> Decimal | None:
    """What one grouped ledger row cost (None: unknown)."""
    if int(row["without_usage"]):
        return None
    usage = Usage(prompt=int(row["prompt_tokens"] or 0), cached=int(row["cached_tokens"] or 0),
                  completion=int(row["completion_tokens"] or 0),
                  reasoning=int(row["reasoning_tokens"] or 0))
    return cost(usage, prices.price(row["provider"], row["model"]))


def cost_report(reader: Reader, prices: PriceBook, *, by: str = "model",
                job: str | None = None) -> dict[str, Any]:
    """The document `tracker cost --json` prints."""
    with localcontext(EXACT):
        return _report(reader, prices, by, job)


def _report(reader: Reader, prices: PriceBook, by: str, job: str | None) -> dict[str, Any]:
    groups: dict[tuple[str, str], _Group] = {}
    for row in usage_by(reader, by, job):
        key = (str(row["key"]), str(row["kind"]))
        group = groups.setdefault(key, _Group(*key))
        group.add(row, row_cost(row, prices))
    ordered = sorted(groups.values(), key=lambda g: (g.kind != RESULT, g.key))
    results = _sum(g.usd for g in ordered if g.kind == RESULT)
    waste = _sum(g.usd for g in ordered if g.kind == WASTE)
    total = None if results is None or waste is None else results + waste
    priced = sum((g.usd for g in ordered if g.usd is not None), Decimal(0))
    unpriced = sorted({m for g in ordered for m in g.unpriced_models})
    return {"total_usd": usd_text(total), "results_usd": usd_text(results),
            "waste_usd": usd_text(waste), "priced_usd": usd_text(priced),
            "unpriced_models": unpriced, "by": by, "job": job,
            "rows": [g.as_dict() for g in ordered]}


def _sum(amounts: Iterable[Decimal | None]) -> Decimal | None:
    total = Decimal(0)
    for amount in amounts:
        if amount is None:
            return None
        total += amount
    return total
