"""The webhook outbox: deliver finished tasks to their ``webhook`` URL, signed, with retries.

A delivery row is written in the same transaction that finishes its task (``worker.py``), so a
webhook exists exactly for finished tasks. The sender claims due rows with a short lease, POSTs
the task object — rendered at each attempt, so image URLs are freshly signed even on a late
retry — and records the outcome:

- any 2xx: ``delivered``;
- 410 Gone: ``failed`` at once (Standard Webhooks: the endpoint asks to be disabled);
- anything else (other status, timeout, refused connection, an address the SSRF rules refuse):
  retried after ``tasks.webhook_backoff * 2^(attempt-1)`` seconds with jitter — or after the
  endpoint's ``Retry-After`` when it asks for longer —, until ``tasks.webhook_max_attempts``
  attempts were made, then ``failed``.

An operator can send one delivery again at once (``POST /admin/webhooks/deliveries/{id}/retry``,
``imagegate webhooks retry ID``): a failed one gets one more attempt.

An endpoint (a URL) that fails ``tasks.webhook_pause_after`` attempts in a row, across tasks, is
*paused*: its deliveries stay pending, unsent, until an operator resumes it (``imagegate webhooks
resume URL`` or ``POST /admin/webhooks/resume``), which makes them due at once. One success
resets the count.

Signing follows Standard Webhooks (``providers.md`` §8): ``webhook-id`` is the delivery id, the
same on every retry (receivers dedupe on it); ``webhook-timestamp`` is this attempt's Unix time;
``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` under the key's
``whsec_`` secret, computed by the ``standardwebhooks`` package itself. Redirects are not
followed (``SafeClient.post``). Retries never block anything: tasks are already finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from imagegate import __version__, logs, metrics
from imagegate.config import TasksConfig
from imagegate.core.errors import InvalidRequest
from imagegate.db.models import ApiKey, Task, WebhookDelivery, WebhookEndpoint
from imagegate.db.status import DELIVERED, FAILED, PENDING
from imagegate.net import SafeClient
from imagegate.tasks.queue import skip_locked

log = logging.getLogger("imagegate.webhooks")
attempt_log = logs.get("imagegate.webhooks")

IN_FLIGHT = 32
LEASE_MARGIN = 5.0
"""Seconds a claimed delivery's lease outlives its attempt (bounded by ``webhook_timeout``): a
process that dies mid-attempt delays that webhook by no more than timeout + margin."""
MAX_DELAY = 24 * 3600.0


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers for ``body`` (the exact bytes sent)."""
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature,
            "content-type": "application/json", "user-agent": f"imagegate/{__version__}"}


def endpoint_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


async def resume_endpoint(sessions: async_sessionmaker[AsyncSession], url: str) -> int:
    """Un-pause ``url``: its pending deliveries are due at once. Returns how many there are;
    ``LookupError`` if the URL was never paused."""
    now = time.time()
    async with sessions.begin() as s:
        endpoint = await s.get(WebhookEndpoint, endpoint_id(url))
        if endpoint is None or endpoint.paused_at is None:
            raise LookupError(f"the webhook URL {url!r} is not paused")
        endpoint.paused_at, endpoint.consecutive_failures = None, 0
        due = await s.execute(update(WebhookDelivery)
                              .where(WebhookDelivery.url == url, WebhookDelivery.status == PENDING)
                              .values(next_attempt_at=now).execution_options(synchronize_session=False))
        return int(due.rowcount)  # type: ignore[attr-defined]


async def deliveries_of(sessions: async_sessionmaker[AsyncSession],
                        task_id: str) -> list[tuple[WebhookDelivery, bool]]:
    """The task's deliveries, oldest first, each with whether its URL is paused."""
    d, e = WebhookDelivery, WebhookEndpoint
    async with sessions() as s:
        rows = (await s.execute(select(d, e.paused_at).outerjoin(e, e.url == d.url)
                                .where(d.task_id == task_id).order_by(d.created_at))).all()
    return [(row, paused_at is not None) for row, paused_at in rows]


async def retry_delivery(sessions: async_sessionmaker[AsyncSession], delivery_id: str) -> WebhookDelivery:
    """Send one delivery again now (an operator's retry of a failed or waiting webhook): it is
    pending and due at once; a failed one gets one more attempt (its attempt count is kept, so the
    ``webhook-id`` and the history stay). ``LookupError``: no such delivery; ``ValueError``: it was
    delivered already, or its URL is paused (resume the URL instead)."""
    async with sessions.begin() as s:
        d = await s.get(WebhookDelivery, delivery_id, with_for_update=True)
        if d is None:
            raise LookupError(f"no webhook delivery {delivery_id!r}")
        if d.status == DELIVERED:
            raise ValueError("this delivery was delivered already")
        endpoint = await s.get(WebhookEndpoint, endpoint_id(d.url))
        if endpoint is not None and endpoint.paused_at is not None:
            raise ValueError(f"the URL {d.url!r} is paused: resume it to send its pending deliveries")
        d.status, d.next_attempt_at, d.lease_until = PENDING, time.time(), None
        await s.flush()
        return d


def backoff(attempt: int, base: float) -> float:
    """Seconds before retry number ``attempt`` (1-based): exponential, capped, with "equal
    jitter" (half fixed, half random) so receivers that failed together are not hit together."""
    delay = min(MAX_DELAY, base * 2.0 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class WebhookSender:
    """Claims due deliveries and sends them, at most ``IN_FLIGHT`` at once per process."""

    def __init__(self, cfg: TasksConfig, sessions: async_sessionmaker[AsyncSession], safe: SafeClient,
                 render: Callable[[Task], Awaitable[dict[str, Any]]]) -> None:
        """``render`` makes the body: the task object as ``GET /v1/images/tasks/{id}`` shows it
        (the surfaces know how; this module only delivers it)."""
        self.cfg = cfg
        self.sessions = sessions
        self.safe = safe
        self.render = render
        self.wake = asyncio.Event()
        self.running: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                free = IN_FLIGHT - len(self.running)
                for d in await self.claim(free) if free > 0 else []:
                    t = asyncio.create_task(self.deliver(d), name=f"webhook-{d.id}")
                    self.running[d.id] = t
                    t.add_done_callback(functools.partial(self._done, d.id))
            except Exception:
                log.exception("could not claim webhook deliveries")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.cfg.poll_seconds)

    def _done(self, delivery_id: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(delivery_id, None)
        self.wake.set()

    async def stop(self) -> None:
        ids, work = list(self.running), list(self.running.values())
        for t in work:
            t.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        if ids:  # hand interrupted attempts back at once
            with contextlib.suppress(Exception):
                async with self.sessions.begin() as s:
                    await s.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
                                    .values(lease_until=None))

    async def claim(self, k: int) -> list[WebhookDelivery]:
        """Lease up to ``k`` due deliveries for one attempt each."""
        now = time.time()
        d = WebhookDelivery
        async with self.sessions.begin() as s:
            paused = select(WebhookEndpoint.url).where(WebhookEndpoint.paused_at.is_not(None))
            pick = skip_locked(
                select(d.id).where(d.status == PENDING, d.next_attempt_at <= now,
                                   or_(d.lease_until.is_(None), d.lease_until < now), d.url.not_in(paused))
                .order_by(d.next_attempt_at).limit(k), s)
            stmt = (update(d).where(d.id.in_(pick.scalar_subquery()))
                    .values(lease_until=now + self.cfg.webhook_timeout + LEASE_MARGIN).returning(d)
                    .execution_options(synchronize_session=False))
            return list((await s.execute(stmt)).scalars())

    async def deliver(self, d: WebhookDelivery) -> None:
        """One attempt, then its outcome recorded."""
        async with self.sessions() as s:
            task = await s.get(Task, d.task_id)
            key = await s.get(ApiKey, d.key_id)
        if task is None or key is None:
            await self._record(d, None, "The task or its API key no longer exists.", final=True)
            return
        body = orjson.dumps(await self.render(task))
        headers = signed_headers(key.webhook_secret, d.id, int(time.time()), body)
        status: int | None = None
        retry_after: float | None = None
        try:
            answer = await self.safe.post(d.url, body, headers, timeout=self.cfg.webhook_timeout)
            status, retry_after = answer.status, answer.retry_after
            error = "" if 200 <= status < 300 else f"The endpoint answered HTTP {status}."
        except InvalidRequest as exc:  # refused address, connection failure, timeout
            error = exc.message
        except Exception as exc:
            log.exception("webhook %s: unexpected error", d.id)
            error = f"{type(exc).__name__}: {exc}"
        await self._record(d, status, error, final=status == 410, retry_after=retry_after)

    async def _record(self, d: WebhookDelivery, status: int | None, error: str, *, final: bool,
                      retry_after: float | None = None) -> None:
        attempts = d.attempts + 1
        now = time.time()
        ok = status is not None and 200 <= status < 300
        if ok:
            outcome, next_at = DELIVERED, now
        elif final or attempts >= self.cfg.webhook_max_attempts:
            outcome, next_at = FAILED, now
            log.warning("webhook %s for task %s failed after %d attempts: %s", d.id, d.task_id, attempts, error)
        else:
            wait = max(backoff(attempts, self.cfg.webhook_backoff), min(retry_after or 0.0, MAX_DELAY))
            outcome, next_at = PENDING, now + wait
        async with self.sessions.begin() as s:
            # Guarded by the attempt count: an attempt that outlived its lease and raced a
            # second one is recorded once.
            done = await s.execute(update(WebhookDelivery)
                                   .where(WebhookDelivery.id == d.id, WebhookDelivery.attempts == d.attempts)
                                   .values(attempts=attempts, status=outcome, next_attempt_at=next_at,
                                           lease_until=None, last_status=status, last_error=error))
        if done.rowcount == 1:  # type: ignore[attr-defined]
            try:
                await self._endpoint_health(d.url, ok, error)
            except IntegrityError:  # two first failures of a new URL at once: count again
                await self._endpoint_health(d.url, ok, error)
        metrics.webhook("retry" if outcome == PENDING else outcome)
        attempt_log.info("webhook attempt", task_id=d.task_id, webhook_id=d.id, attempt=attempts, status=status,
                         outcome="retry" if outcome == PENDING else outcome, error=error or None)
        if outcome == PENDING:
            asyncio.get_running_loop().call_later(next_at - now, self.wake.set)

    async def _endpoint_health(self, url: str, ok: bool, error: str) -> None:
        """Count failed attempts in a row per URL; pause the URL at ``webhook_pause_after``."""
        pause_after = self.cfg.webhook_pause_after
        if not pause_after:
            return
        async with self.sessions.begin() as s:
            endpoint = await s.get(WebhookEndpoint, endpoint_id(url), with_for_update=True)
            if ok:
                if endpoint is not None and endpoint.consecutive_failures:
                    endpoint.consecutive_failures = 0
                return
            if endpoint is None:
                endpoint = WebhookEndpoint(id=endpoint_id(url), url=url, consecutive_failures=0, last_error="")
                s.add(endpoint)
            endpoint.consecutive_failures += 1
            endpoint.last_error = error
            if endpoint.consecutive_failures >= pause_after and endpoint.paused_at is None:
                endpoint.paused_at = time.time()
                log.warning("webhook URL %s paused after %d failed attempts in a row: %s", url,
                            endpoint.consecutive_failures, error)
