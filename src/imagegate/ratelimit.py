"""Per-key requests-per-minute limits (the ``limits`` package: memory embedded, Redis shared)."""

from __future__ import annotations

from limits import RateLimitItemPerMinute, storage
from limits.aio import strategies

from imagegate.accounts import Principal
from imagegate.core.errors import RateLimited


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        backend = storage.storage_from_string(f"async+{redis_url}" if redis_url else "async+memory://")
        self._window = strategies.MovingWindowRateLimiter(backend)
        self._items: dict[int, RateLimitItemPerMinute] = {}

    async def hit(self, who: Principal) -> None:
        if not who.rpm:
            return
        item = self._items.setdefault(who.rpm, RateLimitItemPerMinute(who.rpm))
        if not await self._window.hit(item, who.key_id):
            raise RateLimited(f"Rate limit of {who.rpm} requests per minute reached for this key.",
                              retry_after=60)
