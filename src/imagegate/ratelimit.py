"""Per-key requests-per-minute limits (the ``limits`` package: memory embedded, Redis shared).

A moving window: a key with ``rpm = 10`` may make 10 requests in any 60 seconds. The memory
backend counts per process — with several ``--workers`` each counts alone, so configure
``redis_url`` to share one count between workers and replicas.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute, storage
from limits.aio import strategies

from imagegate.accounts import Principal
from imagegate.core.errors import RateLimited


class RateLimiter:
    """Counts requests per API key; ``hit`` raises ``RateLimited`` (429 + ``Retry-After``)."""

    def __init__(self, redis_url: str | None = None) -> None:
        self._backend = storage.storage_from_string(f"async+{redis_url}" if redis_url else "async+memory://")
        self._window = strategies.MovingWindowRateLimiter(self._backend)
        self._items: dict[int, RateLimitItemPerMinute] = {}

    async def hit(self, who: Principal) -> None:
        if not who.rpm:
            return
        item = self._items.setdefault(who.rpm, RateLimitItemPerMinute(who.rpm, namespace="imagegate-rpm"))
        if await self._window.hit(item, who.key_id):
            return
        # The window frees its oldest slot at ``reset_time``: that is when a retry can succeed.
        stats = await self._window.get_window_stats(item, who.key_id)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(f"Rate limit reached for this API key: {who.rpm} requests per minute. "
                          f"Try again in {wait} s.", retry_after=min(wait, 60))

    def close(self) -> None:
        """Drop the Redis connections (``limits`` offers no close of its own; the memory backend
        has nothing to close)."""
        client = getattr(getattr(self._backend, "bridge", None), "storage", None)
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()
