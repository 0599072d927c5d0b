"""Money: what a job may cost (hold), what it did cost (settle). Unlimited accounts and
unpriced models never touch the ledger, so a self-hoster who does not bill pays no DB writes."""

from __future__ import annotations

import logging
import time

from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.accounts import Principal
from imagegate.billing.ledger import Ledger
from imagegate.billing.prices import Pricer
from imagegate.core.job import ImageJob, Usage
from imagegate.instance import InstanceLease

log = logging.getLogger("imagegate.billing")


class Billing:
    """Holds and settlements of jobs, priced by ``pricer`` and booked in ``ledger``.

    Every hold records ``instance`` (this process); the reaper releases the holds of processes
    whose heartbeat went stale at once, and others only once the request that placed them cannot
    still be running (the TTL plus ``hold_margin``, a backstop; see ``Ledger.expired_holds``)."""

    def __init__(self, pricer: Pricer, ledger: Ledger, *, hold_margin: float = 60.0,
                 instance: InstanceLease | None = None) -> None:
        self.pricer = pricer
        self.ledger = ledger
        self.hold_margin = hold_margin
        self.instance = instance

    async def hold(self, principal: Principal, job: ImageJob, ref: str, *, ttl: float) -> str | None:
        """Set aside the most ``job`` can cost until ``ttl`` seconds (plus the margin) from now;
        raises ``InsufficientQuota``. None: nothing held (unlimited account or free model)."""
        if principal.unlimited:
            return None
        amount = self.pricer.max_cost(job)
        if amount == 0:
            return None
        return await self.ledger.hold(principal.account_id, amount, ref, ttl=ttl + self.hold_margin,
                                      instance_id=self.instance.id if self.instance else None)

    async def settle(self, hold_id: str | None, job: ImageJob, delivered: int, usage: Usage | None,
                     session: AsyncSession | None = None) -> int:
        """Charge for ``delivered`` images (0 on failure) and release the rest. Returns the cost
        (what the job is worth even when nothing was held, for the usage log). Joins
        ``session``'s transaction when given, so a task settles with its terminal update."""
        cost = self.pricer.cost(job, delivered, usage)
        if hold_id is None:
            return cost
        return await self.ledger.settle(hold_id, cost, session)

    async def reap(self) -> int:
        """Release holds left behind by crashed requests; returns how many."""
        if self.instance is None:
            return await self.ledger.release_expired()
        return await self.ledger.release_expired(stale_before=time.time() - self.instance.stale_after,
                                                 alive=self.instance.id)

