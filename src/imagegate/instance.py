"""This process's identity among every gateway process sharing the database.

Each process (every ``--workers`` worker of every replica) registers a row in ``instances`` and
renews its ``heartbeat_at`` every ``interval`` seconds. Sync holds record the instance that
placed them, so when a process dies the reaper releases its holds as soon as its heartbeat is
``stale_after`` seconds old — instead of waiting for the longest its requests could have run —
and never touches the holds of a process that is still beating.
"""

from __future__ import annotations

import os
import socket
import time

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.accounts import new_id
from imagegate.db.models import Instance


class InstanceLease:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, stale_after: float) -> None:
        self._sessions = sessions
        self.stale_after = stale_after
        self.id = new_id("inst")

    async def register(self) -> None:
        now = time.time()
        async with self._sessions.begin() as s:
            s.add(Instance(id=self.id, host=socket.gethostname()[:200], pid=os.getpid(),
                           started_at=now, heartbeat_at=now))

    async def beat(self) -> None:
        """Renew the heartbeat (re-registering if a cleanup took the row while we were stalled),
        and forget instances dead for a day (their holds are long released)."""
        now = time.time()
        async with self._sessions.begin() as s:
            done = await s.execute(update(Instance).where(Instance.id == self.id).values(heartbeat_at=now)
                                   .execution_options(synchronize_session=False))
            await s.execute(delete(Instance).where(Instance.heartbeat_at < now - 86400)
                            .execution_options(synchronize_session=False))
        if done.rowcount != 1:  # type: ignore[attr-defined]
            await self.register()

    async def retire(self) -> None:
        """A clean shutdown: the row goes, so nothing waits for this process's heartbeat."""
        async with self._sessions.begin() as s:
            await s.execute(delete(Instance).where(Instance.id == self.id))
