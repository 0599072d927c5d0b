"""Change counters shared through the database, so every process's caches forget what another
process changed within a fraction of a second — with no database read per request.

Whoever changes a cached fact (revokes a key, tops up an account, edits a channel) calls
``bump(session, name)`` in the same transaction. Each process runs one ``EpochWatcher``: a single
small query every ``interval`` seconds, calling the callbacks registered for each counter that
moved. The hot path only ever reads memory.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db.models import Epoch

KEYS = "keys"
"""API keys and the accounts behind them (revocation, expiry, allow-lists, top-ups)."""


async def bump(session: AsyncSession, name: str) -> None:
    """Move counter ``name`` on, in ``session``'s transaction."""
    done = await session.execute(update(Epoch).where(Epoch.name == name).values(value=Epoch.value + 1)
                                 .execution_options(synchronize_session=False))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        session.add(Epoch(name=name, value=1))


class EpochWatcher:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._seen: dict[str, int] | None = None
        self._callbacks: dict[str, list[Callable[[], None]]] = {}

    def on(self, name: str, callback: Callable[[], None]) -> None:
        self._callbacks.setdefault(name, []).append(callback)

    async def check(self) -> None:
        async with self._sessions() as s:
            rows = (await s.execute(select(Epoch.name, Epoch.value))).all()
        now = {str(name): int(value) for name, value in rows}
        if self._seen is not None:  # the first pass only learns where the counters stand
            for name, value in now.items():
                if self._seen.get(name, 0) != value:
                    for callback in self._callbacks.get(name, ()):
                        callback()
        self._seen = now
