"""Balances and the ledger. Every balance change is one conditional UPDATE plus ledger rows in
the same transaction, so a balance never goes below zero and always equals its ledger's sum.

A request *holds* the most it can cost before anything reaches an upstream and *settles* when
it ends: the hold is released in full and the delivered images are charged. Settling is
idempotent (``holds.settled`` flips once), so a crash-time reaper and a late finisher can never
both apply it.
"""

from __future__ import annotations

import time

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.accounts import new_id
from imagegate.core.errors import InsufficientQuota
from imagegate.db.models import Account, Hold, LedgerEntry


class Ledger:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def hold(self, account_id: str, amount: int, ref: str, *, ttl: float) -> str:
        now = time.time()
        async with self._sessions.begin() as s:
            taken = await s.execute(
                update(Account).where(Account.id == account_id, Account.balance >= amount)
                .values(balance=Account.balance - amount)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise InsufficientQuota(
                    "Your balance does not cover this request. Top up your account and retry."
                )
            hold = Hold(id=new_id("hold"), account_id=account_id, amount=amount, ref=ref,
                        created_at=now, expires_at=now + ttl, settled=False)
            s.add(hold)
            s.add(LedgerEntry(account_id=account_id, ref=ref, kind="hold", amount=-amount, created_at=now))
        return hold.id

    async def settle(self, hold_id: str, charge: int, session: AsyncSession | None = None) -> int:
        """Release the hold and charge ``charge`` (capped at the hold). Returns what was charged;
        0 if the hold was already settled. Joins ``session``'s transaction when given."""
        if session is not None:
            return await self._settle(session, hold_id, charge)
        async with self._sessions.begin() as s:
            return await self._settle(s, hold_id, charge)

    async def _settle(self, s: AsyncSession, hold_id: str, charge: int) -> int:
        hold = await s.get(Hold, hold_id)
        if hold is None:
            return 0
        flipped = await s.execute(
            update(Hold).where(Hold.id == hold_id, Hold.settled.is_(False)).values(settled=True)
        )
        if flipped.rowcount != 1:  # type: ignore[attr-defined]
            return 0
        charge = max(0, min(charge, hold.amount))
        now = time.time()
        await s.execute(update(Account).where(Account.id == hold.account_id)
                        .values(balance=Account.balance + hold.amount - charge))
        s.add(LedgerEntry(account_id=hold.account_id, ref=hold.ref, kind="release", amount=hold.amount,
                          created_at=now))
        if charge:
            s.add(LedgerEntry(account_id=hold.account_id, ref=hold.ref, kind="charge", amount=-charge,
                              created_at=now))
        return charge

    async def topup(self, account_id: str, amount: int) -> None:
        if amount <= 0:
            raise ValueError("a top-up must be positive")
        async with self._sessions.begin() as s:
            done = await s.execute(update(Account).where(Account.id == account_id)
                                   .values(balance=Account.balance + amount))
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise LookupError(f"no account {account_id}")
            s.add(LedgerEntry(account_id=account_id, ref="topup", kind="topup", amount=amount,
                              created_at=time.time()))

    async def expired_holds(self, now: float) -> list[str]:
        """Unsettled holds of sync requests past their expiry (task holds settle with the task)."""
        async with self._sessions() as s:
            rows = await s.execute(select(Hold.id).where(Hold.settled.is_(False), Hold.expires_at < now))
            return list(rows.scalars())
