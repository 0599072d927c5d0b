"""``Pricer`` and the amount helpers: holds cover the most a job can cost, charges follow what
was delivered, and money never passes through a float."""

from __future__ import annotations

from decimal import Decimal

import pytest

from imagegate.billing.prices import Pricer, from_micro, parse_amount, to_micro
from imagegate.config import PriceConfig, Settings
from imagegate.core.job import ImageJob, Usage


def job(**kw: object) -> ImageJob:
    return ImageJob.model_validate({"model": "m", "prompt": "p", **kw})


def pricer(**price: object) -> Pricer:
    return Pricer({"m": PriceConfig.model_validate(price)})


@pytest.mark.parametrize(("text", "micros"), [("12.50", 12_500_000), ("0.000001", 1), ("3", 3_000_000),
                                              (Decimal("0.1"), 100_000), (0.1, 100_000)])
def test_parse_amount(text: str, micros: int) -> None:
    assert parse_amount(text) == micros


@pytest.mark.parametrize("text", ["-1", "1.0000001", "ten", "NaN", "Infinity", ""])
def test_parse_amount_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


def test_micro_round_trip() -> None:
    assert from_micro(12_500_000) == "12.500000"
    assert from_micro(-1) == "-0.000001"
    assert to_micro("0.0000001") == 1  # rounded up: never undercharge by rounding


def test_shorthand_price_in_config() -> None:
    s = Settings.model_validate({"prices": {"m": 0.04, "n": {"by_size": {"1024x1024": "0.08"}}}})
    assert s.prices["m"].per_image == Decimal("0.04")
    assert Pricer(s.prices).max_cost(job(n=2)) == 80_000


def test_size_and_quality_refinements() -> None:
    p = pricer(per_image="1", by_size={"1792x1024": "2"}, by_quality={"hd": "3"})
    assert p.max_cost(job()) == 1_000_000
    assert p.max_cost(job(size="1792x1024")) == 2_000_000
    assert p.max_cost(job(size="1792x1024", quality="hd", n=2)) == 6_000_000  # both match: the higher
    assert p.max_cost(job(size="auto")) == 1_000_000
    # No base price: an unlisted or unnamed size may end up as any listed one.
    q = pricer(by_size={"256x256": "0.25", "1024x1024": "1"})
    assert q.max_cost(job()) == q.max_cost(job(size="999x999")) == 1_000_000
    assert q.cost(job(size="256x256", n=4), 3, None) == 750_000


def test_cost_never_exceeds_the_hold() -> None:
    p = pricer(per_image="1")
    assert p.cost(job(n=2), 5, None) == 2_000_000  # an upstream that sent more than asked
    assert p.cost(job(n=2), 0, None) == 0
    assert Pricer({}).cost(job(), 1, None) == 0 == Pricer({}).max_cost(job())


def test_per_token() -> None:
    p = pricer(input_per_million="5", output_per_million="40", max_input_tokens=1000,
               max_output_tokens_per_image=4000)
    assert p.max_cost(job(n=2)) == 1000 * 5 + 2 * 4000 * 40
    assert p.cost(job(n=2), 2, Usage(input_tokens=10, output_tokens=544, total_tokens=554)) == 10 * 5 + 544 * 40
    # Usage beyond what the hold assumed is capped at the hold.
    assert p.cost(job(), 1, Usage(input_tokens=0, output_tokens=10**6, total_tokens=10**6)) == p.max_cost(job())
    # No usage reported: the delivered share of the hold, or the per-image price when there is one.
    assert p.cost(job(n=2), 1, None) == p.max_cost(job(n=2)) // 2
    both = pricer(per_image="0.04", input_per_million="5", output_per_million="40")
    assert both.cost(job(n=2), 1, None) == 40_000
