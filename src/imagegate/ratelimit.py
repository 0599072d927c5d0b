"""Per-key request limits, and the per-channel ``rpm`` windows (the ``limits`` package: memory
embedded, Redis shared).

A key's ``rpm`` limits the requests that create work — image generations and edits, Gemini
``generateContent``/``streamGenerateContent``, chat completions: ``rpm = 10`` allows 10 of them
in any 60 seconds (a moving window). Reads (polling a task, listing models, usage, the key
itself) have a window of their own, ``max(60, 10 × rpm)`` per minute, so a client that polls its
tasks never spends its budget for images. A key without ``rpm`` has no limit at all.

The memory backend counts per process — with several ``--workers`` each counts alone, so
configure ``redis_url`` to share one count between workers and replicas. A channel's ``rpm``
(``channel_slot``, the circuit breaker's ``SlotTaker``) is counted the same way: with Redis, N
replicas together send a channel at most its ``rpm``.

Redis down: the limiter falls back to this process's memory windows (each replica then counts
alone, so a key may get up to N × its rpm across N replicas) rather than refusing requests or
dropping limits altogether. The first failure is logged, ``healthy`` turns False (``/healthz``
answers "degraded"), and Redis is tried again every ``RETRY_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Literal

from limits import RateLimitItemPerMinute, storage
from limits.aio import strategies

from imagegate.accounts import Principal
from imagegate.core.errors import RateLimited

log = logging.getLogger("imagegate.ratelimit")

Kind = Literal["work", "read"]
CHANNEL_NAMESPACE = "imagegate-channel-rpm"
RETRY_SECONDS = 5.0
TIMEOUT = 1.0
MIN_READS_PER_MINUTE = 60
READS_PER_RPM = 10


def limit_for(rpm: int, kind: Kind) -> int:
    """Requests per minute of ``kind`` a key with ``rpm`` may make."""
    return rpm if kind == "work" else max(MIN_READS_PER_MINUTE, READS_PER_RPM * rpm)


class RateLimiter:
    """Counts requests per API key, work and reads apart; ``hit`` raises ``RateLimited`` (429 +
    ``Retry-After``)."""

    _NAMESPACES: dict[Kind, str] = {"work": "imagegate-rpm", "read": "imagegate-reads"}

    def __init__(self, redis_url: str | None = None) -> None:
        self._backend = storage.storage_from_string(f"async+{redis_url}" if redis_url else "async+memory://")
        self._window = strategies.MovingWindowRateLimiter(self._backend)
        self._local = (strategies.MovingWindowRateLimiter(storage.storage_from_string("async+memory://"))
                       if redis_url else self._window)
        self._items: dict[tuple[str, int], RateLimitItemPerMinute] = {}
        self._retry_at = 0.0
        self.healthy: bool | None = True if redis_url else None
        """None: memory only; else whether the shared (Redis) count answered last time."""

    async def _hit(self, item: RateLimitItemPerMinute, key: str) -> tuple[bool, strategies.MovingWindowRateLimiter]:
        if self._local is not self._window and time.monotonic() >= self._retry_at:
            try:
                allowed = await asyncio.wait_for(self._window.hit(item, key), TIMEOUT)
            except Exception as exc:
                if self.healthy:
                    log.warning("Redis unreachable for rate limits (%s): counting per process until it is back", exc)
                self.healthy = False
                self._retry_at = time.monotonic() + RETRY_SECONDS
            else:
                if self.healthy is False:
                    log.warning("Redis reachable again: rate limits shared again")
                self.healthy = True
                return allowed, self._window
        return await self._local.hit(item, key), self._local

    async def _take(self, namespace: str, key: str, per_minute: int) -> float:
        """One request of ``key``'s window of ``per_minute``: 0 when taken, else the seconds until
        the window frees its oldest slot (when a retry can succeed)."""
        item = self._items.get((namespace, per_minute))
        if item is None:
            item = self._items[(namespace, per_minute)] = RateLimitItemPerMinute(per_minute, namespace=namespace)
        allowed, window = await self._hit(item, key)
        if allowed:
            return 0.0
        return max(0.001, (await window.get_window_stats(item, key)).reset_time - time.time())

    async def channel_slot(self, channel: str, rpm: int) -> float:
        """A channel's ``rpm`` window (``breaker.SlotTaker``)."""
        return await self._take(CHANNEL_NAMESPACE, channel, rpm)

    async def hit(self, who: Principal, kind: Kind = "work") -> None:
        if not who.rpm:
            return
        limit = limit_for(who.rpm, kind)
        seconds = await self._take(self._NAMESPACES[kind], who.key_id, limit)
        if not seconds:
            return
        wait = max(1, math.ceil(seconds))
        if kind == "work":
            message = f"Rate limit reached for this API key: {limit} requests per minute."
        else:
            message = (f"Read limit reached for this API key: {limit} reads per minute (tasks, models, usage; "
                       f"image requests have their own {who.rpm} per minute).")
        raise RateLimited(f"{message} Try again in {wait} s.", retry_after=min(wait, 60))

    def close(self) -> None:
        """Drop the Redis connections (``limits`` offers no close of its own; the memory backend
        has nothing to close)."""
        client = getattr(getattr(self._backend, "bridge", None), "storage", None)
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()
