"""Prices → integer micro-units: the most a job can cost (the hold) and what it did cost."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from imagegate.config import PriceConfig
from imagegate.core.job import ImageJob, Usage

MICRO = 1_000_000


def to_micro(amount: Decimal | float | str) -> int:
    """Currency units → micro-units, rounded up (never undercharge by rounding)."""
    return int((Decimal(str(amount)) * MICRO).to_integral_value(rounding=ROUND_CEILING))


def from_micro(amount: int) -> str:
    return f"{Decimal(amount) / MICRO:.6f}"


class Pricer:
    def __init__(self, prices: dict[str, PriceConfig]) -> None:
        self._prices = prices

    def _per_image(self, price: PriceConfig, job: ImageJob) -> int:
        if job.size and job.size in price.by_size:
            return to_micro(price.by_size[job.size])
        if job.quality and job.quality in price.by_quality:
            return to_micro(price.by_quality[job.quality])
        return to_micro(price.per_image or 0)

    def _tokens(self, price: PriceConfig, input_tokens: int, output_tokens: int) -> int:
        total = (Decimal(input_tokens) * (price.input_per_million or 0)
                 + Decimal(output_tokens) * (price.output_per_million or 0)) / MICRO
        return to_micro(total)

    def _per_token(self, price: PriceConfig) -> bool:
        return price.input_per_million is not None or price.output_per_million is not None

    def max_cost(self, job: ImageJob) -> int:
        """What a hold must cover: every requested image at its highest possible price."""
        price = self._prices.get(job.model)
        if price is None:
            return 0
        if self._per_token(price):
            return self._tokens(price, price.max_input_tokens, job.n * price.max_output_tokens_per_image)
        return job.n * self._per_image(price, job)

    def cost(self, job: ImageJob, delivered: int, usage: Usage | None) -> int:
        """What the caller owes for ``delivered`` images; never more than ``max_cost``."""
        price = self._prices.get(job.model)
        if price is None or delivered == 0:
            return 0
        ceiling = self.max_cost(job)
        if self._per_token(price):
            if usage is None or usage.total_tokens == 0:
                return ceiling * delivered // job.n
            return min(ceiling, self._tokens(price, usage.input_tokens, usage.output_tokens))
        return min(ceiling, delivered * self._per_image(price, job))
