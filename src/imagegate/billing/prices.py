"""Prices → integer micro-units: the most a job can cost (the hold) and what it did cost.

A price is per image or per token (``PriceConfig``). Per image, ``by_size`` and ``by_quality``
refine ``per_image`` for the size and quality words the caller sent; when both match, the higher
applies. A caller who names no size (or ``auto``), or one the table does not list, pays
``per_image`` — and when there is no ``per_image``, the dearest entry of the table, since the
upstream may then pick any of them. Per token (gpt-image-1 reports ``usage``), the hold assumes
``max_input_tokens`` in and ``max_output_tokens_per_image`` out per image; the charge is the
upstream's reported usage, never more than the hold. Money never goes through a float.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.config import PriceConfig
from imagegate.core.job import ImageJob, Usage
from imagegate.db.models import PriceRow

MICRO = 1_000_000
MAX_AMOUNT = 10**12
"""The largest amount one operator call may add (currency units); ~9.2e12 fit a balance."""
_UNSET = frozenset({"", "auto"})


def to_micro(amount: Decimal | int | str) -> int:
    """Currency units → micro-units, rounded up (never undercharge by rounding)."""
    return int((Decimal(str(amount)) * MICRO).to_integral_value(rounding=ROUND_CEILING))


def from_micro(amount: int) -> str:
    """Micro-units → a decimal string with six places (``12500000`` → ``"12.500000"``)."""
    sign, whole = ("-", -amount) if amount < 0 else ("", amount)
    return f"{sign}{whole // MICRO}.{whole % MICRO:06d}"


def parse_amount(text: str | int | float | Decimal) -> int:
    """An operator-typed amount (``12.50``) → micro-units; refuses negatives, non-numbers and
    more precision than a micro-unit."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"not an amount: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"not a non-negative amount: {text!r}")
    micros = value * MICRO
    if micros != micros.to_integral_value():
        raise ValueError(f"{text!r} has more than 6 decimal places")
    if value > MAX_AMOUNT:  # balances are 64-bit micro-units: leave room to add amounts up
        raise ValueError(f"{text!r} is more than {MAX_AMOUNT}")
    return int(micros)


class Pricer:
    """What jobs cost, from the ``prices:`` table of the config (public model name → price)."""

    def __init__(self, prices: dict[str, PriceConfig]) -> None:
        self._prices = prices

    def table(self) -> dict[str, PriceConfig]:
        return dict(self._prices)

    def priced(self, model: str) -> bool:
        return model in self._prices

    @staticmethod
    def _refined(table: dict[str, Decimal], word: str | None) -> Decimal | None:
        if not table:
            return None
        if word and word not in _UNSET and word in table:
            return table[word]
        return None

    def _per_image(self, price: PriceConfig, job: ImageJob) -> int:
        matches = [p for p in (self._refined(price.by_size, job.size),
                               self._refined(price.by_quality, job.quality)) if p is not None]
        if matches:
            return to_micro(max(matches))
        if price.per_image is not None:
            return to_micro(price.per_image)
        # No base price and no match: the upstream may choose any listed size or quality.
        table = [*price.by_size.values(), *price.by_quality.values()]
        return to_micro(max(table)) if table else 0

    def _has_per_image(self, price: PriceConfig) -> bool:
        return price.per_image is not None or bool(price.by_size) or bool(price.by_quality)

    @staticmethod
    def _per_token(price: PriceConfig) -> bool:
        return price.input_per_million is not None or price.output_per_million is not None

    @staticmethod
    def _tokens(price: PriceConfig, input_tokens: int, output_tokens: int) -> int:
        total = (Decimal(input_tokens) * (price.input_per_million or 0)
                 + Decimal(output_tokens) * (price.output_per_million or 0)) / MICRO
        return to_micro(total)

    def max_cost(self, job: ImageJob) -> int:
        """What a hold must cover: every requested image at the highest price it can have."""
        price = self._prices.get(job.model)
        if price is None:
            return 0
        ceilings = []
        if self._per_token(price):
            ceilings.append(self._tokens(price, price.max_input_tokens,
                                         job.n * price.max_output_tokens_per_image))
        if self._has_per_image(price):
            ceilings.append(job.n * self._per_image(price, job))
        return max(ceilings, default=0)

    def cost(self, job: ImageJob, delivered: int, usage: Usage | None) -> int:
        """What the caller owes for ``delivered`` images; never more than ``max_cost``."""
        price = self._prices.get(job.model)
        if price is None or delivered <= 0:
            return 0
        ceiling = self.max_cost(job)
        delivered = min(delivered, job.n)
        if self._per_token(price) and usage is not None and usage.input_tokens + usage.output_tokens > 0:
            return min(ceiling, self._tokens(price, usage.input_tokens, usage.output_tokens))
        if self._has_per_image(price):
            return min(ceiling, delivered * self._per_image(price, job))
        # Per-token price but the upstream reported no usage: the delivered share of the hold.
        return ceiling * delivered // job.n


async def stored_prices(session: AsyncSession) -> dict[str, PriceConfig]:
    """Prices set at runtime (admin API, ``imagegate prices set``); they override the configuration's."""
    rows = (await session.execute(select(PriceRow))).scalars()
    return {r.model: PriceConfig.model_validate(r.price) for r in rows}
