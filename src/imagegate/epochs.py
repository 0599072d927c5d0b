"""Change counters shared through the database, so every process's caches forget what another
process changed within a fraction of a second — with no database read per request.

Whoever changes a cached fact (revokes a key, tops up an account, edits a channel) calls
``bump(session, name)`` in the same transaction. Each process runs one ``EpochWatcher``: a single
small query every ``interval`` seconds, calling the callbacks registered for each counter that
moved. The hot path only ever reads memory.

With Redis (``events.py``) a commit that bumped a counter also publishes a hint (``announce``),
and every watcher that hears it reads the counters at once instead of at its next poll; the poll
stays as the fallback for lost hints, a Redis outage, and bumps made by the CLI.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from imagegate.db.models import Epoch

log = logging.getLogger("imagegate.epochs")
Callback = Callable[[], Awaitable[None] | None]

KEYS = "keys"
"""API keys and the accounts behind them (revocation, expiry, allow-lists, top-ups)."""
CHANNELS = "channels"
"""Channels kept in the database (``channelstore``): every process rebuilds its router."""
PRICES = "prices"
"""Model prices kept in the database: every process reloads its price table."""
BUMPED = "imagegate.epochs.bumped"
"""``Session.info`` key: this transaction moved a counter (announced after its commit)."""


async def bump(session: AsyncSession, name: str) -> None:
    """Move counter ``name`` on, in ``session``'s transaction."""
    done = await session.execute(update(Epoch).where(Epoch.name == name).values(value=Epoch.value + 1)
                                 .execution_options(synchronize_session=False))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        session.add(Epoch(name=name, value=1))
    session.sync_session.info[BUMPED] = True


def announce(hint: Callable[[], None]) -> Callable[[], None]:
    """Call ``hint`` after every commit in this process that bumped a counter; returns the
    function that stops it. (A session event on the ``Session`` class: the cost for other
    commits is one dict lookup.)"""
    def committed(session: Session) -> None:
        if session.info.pop(BUMPED, False):
            hint()

    def rolled_back(session: Session, previous_transaction: object) -> None:
        session.info.pop(BUMPED, None)

    event.listen(Session, "after_commit", committed)
    event.listen(Session, "after_soft_rollback", rolled_back)

    def stop() -> None:
        event.remove(Session, "after_commit", committed)
        event.remove(Session, "after_soft_rollback", rolled_back)

    return stop


class EpochWatcher:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._seen: dict[str, int] | None = None
        self._callbacks: dict[str, list[Callback]] = {}
        self._poked: asyncio.Task[None] | None = None
        self._checking = asyncio.Lock()

    def poke(self) -> None:
        """Read the counters now (a hint that one moved), not at the next poll."""
        if self._poked is None or self._poked.done():
            self._poked = asyncio.get_running_loop().create_task(self._check_logged())

    async def _check_logged(self) -> None:
        try:
            await self.check()
        except Exception:
            log.exception("change counters: a check on a hint failed (the poll goes on)")

    def on(self, name: str, callback: Callback) -> None:
        """Call ``callback`` (a plain function, or a coroutine function awaited in turn) when
        counter ``name`` moves."""
        self._callbacks.setdefault(name, []).append(callback)

    async def check(self) -> None:
        async with self._checking:  # a hint's check and the poll's never interleave
            await self._check()

    async def _check(self) -> None:
        async with self._sessions() as s:
            rows = (await s.execute(select(Epoch.name, Epoch.value))).all()
        now = {str(name): int(value) for name, value in rows}
        if self._seen is not None:  # the first pass only learns where the counters stand
            for name, value in now.items():
                if self._seen.get(name, 0) != value:
                    for callback in self._callbacks.get(name, ()):
                        try:
                            result = callback()
                            if inspect.isawaitable(result):
                                await result
                        except Exception:  # one failing reload must not stop the others
                            log.exception("reacting to a change of %r failed", name)
        self._seen = now
