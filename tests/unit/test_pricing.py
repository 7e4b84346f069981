"""Prices, exact amounts and their display; reading the prices of a config file."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tracker.config import load_config
from tracker.errors import ConfigError
from tracker.pricing import Price, PriceBook, Usage, cost, shown_usd, to_decimal, usd_text

PRICE = Price(input=Decimal("0.15"), output=Decimal("0.6"), cached_input=Decimal("0.075"))


def test_cost__exact_per_million_with_cached_and_reasoning_tokens() -> None:
    usage = Usage(prompt=2500, cached=1024, completion=800, reasoning=300)
    assert cost(usage, PRICE) == Decimal("0.0007782")  # reasoning is inside completion
    assert cost(Usage(prompt=1, completion=1), PRICE) == Decimal("0.00000075")


def test_cost__unknown_never_zero() -> None:
    assert cost(Usage(prompt=10), None) is None
    assert cost(Usage(prompt=None), PRICE) is None  # a line that gave no usage
    no_cached = Price(input=Decimal(1), output=Decimal(1))
    assert cost(Usage(prompt=10, cached=5), no_cached) is None
    assert cost(Usage(prompt=10, cached=0), no_cached) == Decimal("0.00001")
    assert usd_text(None) == "unknown" and shown_usd("unknown") == "unknown"


@pytest.mark.parametrize(("amount", "text"), [
    (Decimal("0"), "0.00"), (Decimal("12.5"), "12.50"), (Decimal("0.000083375"), "0.000083375"),
    (Decimal("1E+3"), "1000.00")])
def test_usd_text__every_digit_kept(amount: Decimal, text: str) -> None:
    assert usd_text(amount) == text


@pytest.mark.parametrize(("amount", "shown"), [
    ("0.000083375", "<$0.0001"), ("0", "$0.00"), ("0.00015", "$0.0002"), (None, "-")])
def test_shown_usd__never_a_false_zero(amount: str | None, shown: str) -> None:
    assert shown_usd(amount) == shown


def test_to_decimal__reads_a_float_as_written() -> None:
    assert to_decimal(0.075) == Decimal("0.075") and to_decimal(3) == Decimal(3)


def _config(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "llm_config.yaml"
    path.write_text("batch:\n  budget_usd: 12.5\n  providers:\n    openai:\n      models:\n"
                    f"        - name: house\n{model}")
    return path


def test_price_book__config_over_packaged_table_and_read_without_validation(
        tmp_path: Path) -> None:
    path = _config(tmp_path, "          prices_per_million: {input: 2, output: 8}\n"
                             "          max_output_tokens: 512\n")
    for book in (PriceBook.read(path), PriceBook(load_config(path))):
        assert book.budget_usd == Decimal("12.5")
        assert book.limits("openai", "house").price == Price(Decimal(2), Decimal(8))
        assert book.limits("openai", "house").max_output_tokens == 512
        assert book.price("openai", "gpt-4o-mini") == Price(
            Decimal("0.075"), Decimal("0.30"), Decimal("0.0375"))
        assert book.price("openai", "no-such-model") is None
        assert book.price("other", "gpt-4o-mini") is None  # the table is OpenAI's


def test_price_book__a_malformed_price_is_reported_by_the_full_validation(
        tmp_path: Path) -> None:
    path = _config(tmp_path, "          prices_per_million: {input: cheap, output: 8}\n")
    with pytest.raises(ConfigError, match=r"llm_config.yaml:7: .*prices_per_million.input: "
                                          "input should be a valid number"):
        PriceBook.read(path)


def test_worst_case_output__a_cap_below_one_is_no_cap_and_n_choices_multiply() -> None:
    from tracker.steps.budget import _output_tokens

    payloads = [json.dumps(p) for p in (
        {"max_tokens": -1_000_000_000}, {"max_tokens": 100, "n": 8},
        {"max_completion_tokens": 50_000}, {})]
    assert _output_tokens(payloads, cap=16_384) == 16_384 + 800 + 16_384 + 16_384
    assert _output_tokens(payloads[1:2], cap=None) == 800
    assert _output_tokens(payloads[3:], cap=None) is None  # no cap anywhere: unknown


def test_worst_case_output__best_of_multiplies_like_n() -> None:
    from tracker.steps.budget import _output_tokens

    assert _output_tokens([json.dumps({"max_tokens": 10, "best_of": 5, "n": 2})], cap=None) == 50
