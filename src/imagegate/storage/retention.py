"""Image retention: the sweeper that deletes stored images older than ``storage.retention_days``.

Every stored object is swept by age alone, except the images of async tasks that are still kept
(``tasks.retention_days``): a task's uploads and results live as long as its row, and the task
cleanup deletes them with it. Only a task submitted before the cutoff can own an image older than
the cutoff, so the sweeper asks ``kept(cutoff)`` (the task queue answers) for just those — none at
all in the usual set-up, where images outlive tasks (30 days against 7).

No database row points at a sync request's image (usage rows do not name blobs), so sweeping
deletes files only. Several gateway processes may sweep at once: deleting a missing object is not
an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from imagegate.config import StorageConfig
from imagegate.periodic import Periodic
from imagegate.storage.base import BlobStore

log = logging.getLogger("imagegate.storage")


Kept = Callable[[float], Awaitable[set[str]]]
"""Blob keys still owned by something kept (a task) among those of things made before a time."""


class Sweeper:
    def __init__(self, store: BlobStore, kept: Kept, retention_days: float) -> None:
        self.store = store
        self.kept = kept
        self.retention = retention_days * 86400

    async def sweep(self, now: float | None = None) -> int:
        """Delete what is past retention; returns how many objects."""
        cutoff = (time.time() if now is None else now) - self.retention
        kept = await self.kept(cutoff)
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


def image_sweeper(store: BlobStore, kept: Kept, cfg: StorageConfig) -> Periodic | None:
    """The periodic sweep of a gateway process; None when images are kept forever."""
    if cfg.keeps_forever or cfg.retention_days is None:
        return None
    return Periodic("image-sweeper", Sweeper(store, kept, cfg.retention_days).sweep, cfg.sweep_interval)
