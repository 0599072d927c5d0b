"""Money: what a job may cost (hold), what it did cost (settle). Unlimited accounts and
unpriced models never touch the ledger, so a self-hoster who does not bill pays no DB writes."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.accounts import Principal
from imagegate.billing.ledger import Ledger
from imagegate.billing.prices import Pricer
from imagegate.core.job import ImageJob, Usage

log = logging.getLogger("imagegate.billing")


class Billing:
    """Holds and settlements of jobs, priced by ``pricer`` and booked in ``ledger``.

    ``hold_margin`` is added to every hold's TTL: the reaper may release a hold only once the
    request that placed it cannot still be running (``expired_holds``)."""

    def __init__(self, pricer: Pricer, ledger: Ledger, *, hold_margin: float = 60.0) -> None:
        self.pricer = pricer
        self.ledger = ledger
        self.hold_margin = hold_margin

    async def hold(self, principal: Principal, job: ImageJob, ref: str, *, ttl: float) -> str | None:
        """Set aside the most ``job`` can cost until ``ttl`` seconds (plus the margin) from now;
        raises ``InsufficientQuota``. None: nothing held (unlimited account or free model)."""
        if principal.unlimited:
            return None
        amount = self.pricer.max_cost(job)
        if amount == 0:
            return None
        return await self.ledger.hold(principal.account_id, amount, ref, ttl=ttl + self.hold_margin)

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
        return await self.ledger.release_expired()


class HoldReaper:
    """Runs ``Billing.reap`` at start-up and every ``interval`` seconds in the app's lifespan."""

    def __init__(self, billing: Billing, interval: float) -> None:
        self._billing = billing
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                await self._billing.reap()
            except Exception:  # a locked or unreachable database must not end the loop
                log.exception("hold reaper pass failed")
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hold-reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
