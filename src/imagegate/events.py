"""Cross-replica hints through Redis pub/sub: "a task was queued", "a change counter moved".

A hint only makes something happen sooner — the database stays the source of truth and every
listener keeps its own poll as the fallback (task workers every ``tasks.poll_seconds``, the change
watcher every ``cache_check_interval``). So a lost message, a Redis restart or no Redis at all
costs latency, never correctness. ``open_events(None)`` is the no-op used without ``redis_url``.

``notify`` never blocks and never raises: it schedules the publish. When Redis cannot be reached,
the first failure is logged once, ``healthy`` turns False (``/healthz`` says "degraded"), and the
listener reconnects every ``RETRY_SECONDS`` until Redis is back (logged once too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

import coredis

log = logging.getLogger("imagegate.events")

PREFIX = "imagegate:"
TASKS = "tasks"
"""A task was queued (or released to run soon): idle workers look for work now."""
EPOCHS = "epochs"
"""A change counter moved (``epochs.bump``): watchers read the counters now."""
RETRY_SECONDS = 1.0
TIMEOUT = 1.0


class Events(Protocol):
    healthy: bool | None
    """None: no Redis configured; else whether the last contact with Redis worked."""

    def on(self, topic: str, callback: Callable[[], None]) -> None: ...
    def notify(self, topic: str) -> None: ...
    def start(self) -> None: ...
    async def stop(self) -> None: ...


class NoEvents:
    """No Redis: hints stay inside the process (callbacks of this process are still called)."""

    healthy: bool | None = None

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callable[[], None]]] = {}

    def on(self, topic: str, callback: Callable[[], None]) -> None:
        self._callbacks.setdefault(topic, []).append(callback)

    def notify(self, topic: str) -> None:
        for callback in self._callbacks.get(topic, ()):
            callback()

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class RedisEvents:
    """Publishes hints to, and listens for them on, ``imagegate:<topic>`` channels."""

    def __init__(self, url: str) -> None:
        self._client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url, connect_timeout=TIMEOUT, stream_timeout=TIMEOUT, retry_policy=coredis.retry.NoRetryPolicy())
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self.healthy: bool | None = True

    def on(self, topic: str, callback: Callable[[], None]) -> None:
        self._callbacks.setdefault(topic, []).append(callback)

    def notify(self, topic: str) -> None:
        if self.healthy is False and time.monotonic() < self._retry_at:  # down: no connect attempt per hint
            self._local(topic)
            return
        send = asyncio.get_running_loop().create_task(self._publish(topic))
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)

    async def _publish(self, topic: str) -> None:
        try:
            await asyncio.wait_for(self._client.publish(PREFIX + topic, b"1"), TIMEOUT)
        except Exception as exc:
            self._down(exc)
            self._local(topic)

    def _local(self, topic: str) -> None:
        for callback in self._callbacks.get(topic, ()):  # this process still hears itself
            callback()

    def _down(self, exc: BaseException) -> None:
        if self.healthy:
            log.warning("Redis unreachable (%s): cross-replica hints off, falling back to database polling", exc)
        self.healthy = False
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def _up(self) -> None:
        if self.healthy is False:
            log.warning("Redis reachable again: cross-replica hints back on")
        self.healthy = True

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="events-listener")

    async def _listen(self) -> None:
        channels = {PREFIX + topic: topic for topic in self._callbacks}
        while channels:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(pubsub.subscribe(*channels), TIMEOUT)
                self._up()
                while True:
                    message = await pubsub.get_message(timeout=RETRY_SECONDS)
                    if message is None or message.get("type") != "message":
                        continue
                    channel = message["channel"]
                    topic = channels.get(channel.decode() if isinstance(channel, bytes) else str(channel))
                    for callback in self._callbacks.get(topic or "", ()):
                        callback()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(exc)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
            await asyncio.sleep(RETRY_SECONDS)

    async def stop(self) -> None:
        tasks = [*self._sends, *([self._listener] if self._listener else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            self._client.connection_pool.disconnect()


def open_events(redis_url: str | None) -> Events:
    return RedisEvents(redis_url) if redis_url else NoEvents()
