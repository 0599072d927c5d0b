"""``Idempotency-Key``: the same key with the same request within ``ttl`` gets the first answer.

The first request with a key *claims* it (a row, inserted; the primary key makes the claim
atomic across processes and replicas), runs, and *finishes* it with its answer. A repeat finds
the row: a finished answer is replayed (same images, same task id, same status) without calling
an upstream or moving money; a running one is awaited; a different request under the same key is
a conflict. A first request that failed with a 5xx *abandons* its claim, so the caller may retry
with the same key. If the process running the first request dies, a repeat takes the claim over
(its heartbeat is stale: ``instance.py``). Keys are scoped to the account.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db.models import IdempotentRequest, Instance
from imagegate.instance import InstanceLease

TTL = 24 * 3600.0


@dataclass(frozen=True)
class Claimed:
    """This request runs; ``finish`` or ``abandon`` it."""


@dataclass(frozen=True)
class Replay:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Conflict:
    """The key was used for a different request."""


Outcome = Claimed | Replay | Conflict


class IdempotencyKeys:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], instance: InstanceLease, *,
                 ttl: float = TTL, poll: float = 0.1) -> None:
        self._sessions = sessions
        self._instance = instance
        self.ttl = ttl
        self._poll = poll

    async def begin(self, account_id: str, key: str, fingerprint: str, *, wait: float) -> Outcome:
        """Claim ``key``, or learn what became of its first request (waiting up to ``wait``
        seconds while that one still runs; then it is reported as a conflict of timing)."""
        give_up = time.monotonic() + wait
        while True:
            row = await self._claim_or_read(account_id, key, fingerprint)
            if row is None:
                return Claimed()
            if row.fingerprint != fingerprint:
                return Conflict()
            if row.done:
                assert row.status is not None and row.body is not None
                return Replay(row.status, dict(row.headers or {}), row.body)
            if await self._take_over(row, fingerprint):
                return Claimed()
            if time.monotonic() > give_up:
                raise TimeoutError
            await asyncio.sleep(self._poll)

    async def _claim_or_read(self, account_id: str, key: str, fingerprint: str) -> IdempotentRequest | None:
        now = time.time()
        try:
            async with self._sessions.begin() as s:
                s.add(IdempotentRequest(account_id=account_id, key=key, fingerprint=fingerprint,
                                        instance_id=self._instance.id, done=False, created_at=now))
            return None
        except IntegrityError:
            pass
        async with self._sessions() as s:
            row = await s.get(IdempotentRequest, (account_id, key))
        if row is not None and row.created_at < now - self.ttl:  # forgotten: the key is free again
            async with self._sessions.begin() as s:
                await s.execute(delete(IdempotentRequest).where(
                    IdempotentRequest.account_id == account_id, IdempotentRequest.key == key,
                    IdempotentRequest.created_at == row.created_at))
            return await self._claim_or_read(account_id, key, fingerprint)
        if row is None:  # abandoned between our insert and our read: try again
            return await self._claim_or_read(account_id, key, fingerprint)
        return row

    async def _take_over(self, row: IdempotentRequest, fingerprint: str) -> bool:
        """Claim a running request whose process is dead (no heartbeat for ``stale_after``)."""
        stale_before = time.time() - self._instance.stale_after
        async with self._sessions.begin() as s:
            beating = await s.scalar(select(Instance.id).where(
                Instance.id == row.instance_id, Instance.heartbeat_at >= stale_before))
            if beating is not None:
                return False
            done = await s.execute(update(IdempotentRequest).where(
                IdempotentRequest.account_id == row.account_id, IdempotentRequest.key == row.key,
                IdempotentRequest.instance_id == row.instance_id, IdempotentRequest.done.is_(False),
            ).values(instance_id=self._instance.id).execution_options(synchronize_session=False))
            return done.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    async def finish(self, account_id: str, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
        async with self._sessions.begin() as s:
            await s.execute(update(IdempotentRequest).where(
                IdempotentRequest.account_id == account_id, IdempotentRequest.key == key,
                IdempotentRequest.instance_id == self._instance.id,
            ).values(done=True, status=status, headers=headers, body=body)
             .execution_options(synchronize_session=False))

    async def abandon(self, account_id: str, key: str) -> None:
        async with self._sessions.begin() as s:
            await s.execute(delete(IdempotentRequest).where(
                IdempotentRequest.account_id == account_id, IdempotentRequest.key == key,
                IdempotentRequest.instance_id == self._instance.id, IdempotentRequest.done.is_(False)))

    async def sweep(self) -> int:
        """Forget answers (and claims) older than ``ttl``."""
        async with self._sessions.begin() as s:
            done = await s.execute(delete(IdempotentRequest).where(
                IdempotentRequest.created_at < time.time() - self.ttl))
        return int(done.rowcount)  # type: ignore[attr-defined]


def replayable(status: int) -> bool:
    """Answers kept for repeats: successes and the request's own 4xx. Not 5xx (the caller may
    retry), nor the answers that depend on the moment (401 key, 409, 429 rate or quota)."""
    return status < 500 and status not in (401, 409, 429)


def headers_to_keep(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    skip = {b"content-length", b"date", b"server", b"transfer-encoding", b"connection"}
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw if k.lower() not in skip}


def as_raw(headers: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]
