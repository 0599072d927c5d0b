"""Image retention: the sweeper that deletes stored images older than ``storage.retention_days``.

Every stored object is swept by age alone, except the images of async tasks that are still kept
(``tasks.retention_days``): a task's uploads and results live as long as its row, and the task
cleanup deletes them with it. Only a task submitted before the cutoff can own an image older than
the cutoff, so the sweeper looks up just those tasks — none at all in the usual set-up, where
images outlive tasks (30 days against 7).

No database row points at a sync request's image (usage rows do not name blobs), so sweeping
deletes files only. Several gateway processes may sweep at once: deleting a missing object is not
an error.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.config import StorageConfig
from imagegate.db.models import Task
from imagegate.gateway import JobState
from imagegate.periodic import Periodic
from imagegate.storage.base import BlobStore
from imagegate.tasks.worker import blobs_of

log = logging.getLogger("imagegate.storage")


class Sweeper:
    def __init__(self, store: BlobStore, sessions: async_sessionmaker[AsyncSession], retention_days: float) -> None:
        self.store = store
        self.sessions = sessions
        self.retention = retention_days * 86400

    async def sweep(self, now: float | None = None) -> int:
        """Delete what is past retention; returns how many objects."""
        cutoff = (time.time() if now is None else now) - self.retention
        kept = await self.task_blobs(submitted_before=cutoff)
        removed = 0
        async for keys in self.store.keys_older_than(cutoff):
            for key in keys:
                if key not in kept:
                    await self.store.delete(key)
                    removed += 1
        if removed:
            log.info("retention: deleted %d stored image(s) older than %s days", removed,
                     f"{self.retention / 86400:g}")
        return removed

    async def task_blobs(self, *, submitted_before: float) -> set[str]:
        """Blobs owned by the tasks submitted before ``submitted_before`` that still exist:
        uploads and results, and the images an unfinished task has delivered so far."""
        kept: set[str] = set()
        async with self.sessions() as s:
            rows = await s.stream_scalars(select(Task).where(Task.submit_time < submitted_before)
                                          .execution_options(yield_per=500))
            async for task in rows:
                kept.update(blobs_of(task))
                if task.state:
                    kept.update(d.blob for d in JobState.model_validate(task.state).delivered if d.blob)
        return kept


def image_sweeper(store: BlobStore, sessions: async_sessionmaker[AsyncSession], cfg: StorageConfig) -> Periodic | None:
    """The periodic sweep of a gateway process; None when images are kept forever."""
    if cfg.keeps_forever or cfg.retention_days is None:
        return None
    return Periodic("image-sweeper", Sweeper(store, sessions, cfg.retention_days).sweep, cfg.sweep_interval)
