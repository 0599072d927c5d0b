"""Money: what a job may cost (hold), what it did cost (settle). Unlimited accounts and
unpriced models never touch the ledger, so a self-hoster who does not bill pays no DB writes."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.accounts import Principal
from imagegate.billing.ledger import Ledger
from imagegate.billing.prices import Pricer
from imagegate.core.job import ImageJob, Usage


class Billing:
    def __init__(self, pricer: Pricer, ledger: Ledger) -> None:
        self.pricer = pricer
        self.ledger = ledger

    async def hold(self, principal: Principal, job: ImageJob, ref: str, *, ttl: float) -> str | None:
        """Set aside the most ``job`` can cost; raises ``InsufficientQuota``. None: nothing held."""
        if principal.unlimited:
            return None
        amount = self.pricer.max_cost(job)
        if amount == 0:
            return None
        return await self.ledger.hold(principal.account_id, amount, ref, ttl=ttl)

    async def settle(self, hold_id: str | None, job: ImageJob, delivered: int, usage: Usage | None,
                     session: AsyncSession | None = None) -> int:
        """Charge for ``delivered`` images (0 on failure) and release the rest. Returns the cost."""
        cost = self.pricer.cost(job, delivered, usage)
        if hold_id is None:
            return cost
        return await self.ledger.settle(hold_id, cost, session)
