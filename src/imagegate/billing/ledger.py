"""Balances and the ledger. Every balance change is one conditional UPDATE plus ledger rows in
the same transaction, so a balance never goes below zero and always equals its ledger's sum.

A request *holds* the most it can cost before anything reaches an upstream and *settles* when
it ends: the hold is released in full and the delivered images are charged. Settling is
idempotent (``holds.settled`` flips once, by a conditional UPDATE), so a crash-time reaper and a
late finisher can never both apply it: whoever flips it moves the money, the other does nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Exists, and_, exists, false, func, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.accounts import new_id
from imagegate.core.errors import InsufficientQuota
from imagegate.db.models import Account, Hold, Instance, LedgerEntry, Task
from imagegate.db.status import CHARGE, HOLD, RELEASE, TASK_MAY_CHARGE, TOPUP

log = logging.getLogger("imagegate.billing")



@dataclass(frozen=True)
class Statement:
    """An account's money at one instant (read in one transaction)."""

    account_id: str
    name: str
    unlimited: bool
    balance: int
    held: int
    """Sum of open (unsettled) holds — already taken out of ``balance``."""
    open_holds: int
    ledger_sum: int

    @property
    def consistent(self) -> bool:
        return self.ledger_sum == self.balance


class Ledger:
    """Money movements of accounts; see the module docstring for the invariants."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def hold(self, account_id: str, amount: int, ref: str, *, ttl: float,
                   instance_id: str | None = None) -> str:
        """Take ``amount`` out of the balance for ``ref`` until settled; raises ``InsufficientQuota``."""
        if amount <= 0:
            raise ValueError("a hold must be positive")
        now = time.time()
        async with self._sessions.begin() as s:
            taken = await s.execute(
                update(Account).where(Account.id == account_id, Account.balance >= amount)
                .values(balance=Account.balance - amount)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise InsufficientQuota(
                    "You exceeded your current quota: your balance does not cover this request. "
                    "Top up your account and retry."
                )
            hold = Hold(id=new_id("hold"), account_id=account_id, amount=amount, ref=ref,
                        created_at=now, expires_at=now + ttl, settled=False, instance_id=instance_id)
            s.add(hold)
            s.add(LedgerEntry(account_id=account_id, ref=ref, kind=HOLD, amount=-amount, created_at=now))
        return hold.id

    async def settle(self, hold_id: str, charge: int, session: AsyncSession | None = None) -> int:
        """Release the hold and charge ``charge`` (capped at the hold). Returns what was charged;
        0 if the hold was already settled. Joins ``session``'s transaction when given."""
        if session is not None:
            return await self._settle(session, hold_id, charge) or 0
        async with self._sessions.begin() as s:
            return await self._settle(s, hold_id, charge) or 0

    async def _settle(self, s: AsyncSession, hold_id: str, charge: int) -> int | None:
        """The charge, or None when the hold was settled already (or does not exist)."""
        # Flip first: on PostgreSQL the UPDATE takes the row lock, so of two settlers the second
        # waits, then sees ``settled`` true and matches nothing. The amount never changes, so
        # reading it afterwards is safe.
        flipped = await s.execute(
            update(Hold).where(Hold.id == hold_id, Hold.settled.is_(False)).values(settled=True)
            .execution_options(synchronize_session=False)
        )
        if flipped.rowcount != 1:  # type: ignore[attr-defined]
            return None
        row = (await s.execute(select(Hold.account_id, Hold.amount, Hold.ref).where(Hold.id == hold_id))).one()
        account_id, amount, ref = row
        if charge > amount:
            log.warning("hold %s of %d does not cover the cost %d; charging the hold", hold_id, amount, charge)
        charge = max(0, min(charge, amount))
        now = time.time()
        await s.execute(update(Account).where(Account.id == account_id)
                        .values(balance=Account.balance + amount - charge))
        s.add(LedgerEntry(account_id=account_id, ref=ref, kind=RELEASE, amount=amount, created_at=now))
        if charge:
            s.add(LedgerEntry(account_id=account_id, ref=ref, kind=CHARGE, amount=-charge, created_at=now))
        return charge

    async def topup(self, account_id: str, amount: int) -> None:
        if amount <= 0:
            raise ValueError("a top-up must be positive")
        async with self._sessions.begin() as s:
            await credit(s, account_id, amount)

    async def expired_holds(self, now: float, *, stale_before: float | None = None,
                            alive: str | None = None) -> list[str]:
        """Unsettled holds that nothing can settle any more: those placed by a process whose
        heartbeat is older than ``stale_before`` (or gone), and any past its expiry (a sync
        request that cannot still be running, a task that failed). A hold whose task is queued,
        running or succeeded is the task's to settle, and one placed by ``alive`` (the caller's
        own process) is still its own — never the reaper's."""
        orphaned = Hold.expires_at < now
        if stale_before is not None:
            beating = select(Instance.id).where(Instance.heartbeat_at >= stale_before)
            orphaned = or_(orphaned, and_(Hold.instance_id.is_not(None), Hold.instance_id.not_in(beating)))
        mine = Hold.instance_id == alive if alive is not None else false()
        async with self._sessions() as s:
            rows = await s.execute(select(Hold.id).where(
                Hold.settled.is_(False), orphaned, not_(and_(mine, Hold.expires_at >= now)),
                not_(_task_may_charge())))
            return list(rows.scalars())

    async def release_expired(self, now: float | None = None, *, stale_before: float | None = None,
                              alive: str | None = None) -> int:
        """Release the holds ``expired_holds`` finds; returns how many this call released."""
        released = 0
        now = time.time() if now is None else now
        for hold_id in await self.expired_holds(now, stale_before=stale_before, alive=alive):
            async with self._sessions.begin() as s:
                # Re-checked inside the settling transaction: a task may have claimed its hold since.
                still = await s.execute(select(Hold.id).where(
                    Hold.id == hold_id,
                    not_(_task_may_charge())))
                if still.first() is None:
                    continue
                # ``_settle`` flips ``settled`` conditionally: a finisher that got there first wins.
                if await self._settle(s, hold_id, 0) is not None:
                    released += 1
        if released:
            log.warning("released %d hold(s) left by requests that never settled", released)
        return released

    async def statement(self, account_id: str) -> Statement | None:
        async with self._sessions() as s:
            account = await s.get(Account, account_id)
            if account is None:
                return None
            held = (await s.execute(
                select(func.count(), func.coalesce(func.sum(Hold.amount), 0))
                .where(Hold.account_id == account_id, Hold.settled.is_(False)))).one()
            total = await s.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                                   .where(LedgerEntry.account_id == account_id))
            return Statement(account.id, account.name, account.unlimited, account.balance,
                             int(held[1]), int(held[0]), int(total or 0))


def _task_may_charge() -> Exists:
    """The hold belongs to a task (by ``holds.ref`` or ``tasks.hold_id``) that may still charge it."""
    return exists().where(or_(Task.id == Hold.ref, Task.hold_id == Hold.id), Task.status.in_(TASK_MAY_CHARGE))


async def credit(session: AsyncSession, account_id: str, amount: int, *, ref: str | None = None) -> None:
    """Add ``amount`` to a balance with its ``topup`` ledger row, in ``session``'s transaction."""
    done = await session.execute(update(Account).where(Account.id == account_id)
                                 .values(balance=Account.balance + amount)
                                 .execution_options(synchronize_session=False))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise LookupError(f"no account {account_id}")
    session.add(LedgerEntry(account_id=account_id, ref=ref or new_id("topup"), kind=TOPUP, amount=amount,
                            created_at=time.time()))
