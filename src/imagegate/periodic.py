"""One background loop for every periodic chore of a process (hold reaper, heartbeat, change
watcher, sweepers): run ``fn`` now and every ``interval`` seconds until stopped; a failed pass
is logged and the loop goes on (a locked or unreachable database must not end it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("imagegate.periodic")


class Periodic:
    def __init__(self, name: str, fn: Callable[[], Awaitable[object]], interval: float) -> None:
        self.name = name
        self._fn = fn
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                await self._fn()
            except Exception:
                log.exception("%s pass failed", self.name)
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
