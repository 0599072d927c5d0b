"""Watching the gateway: the request edge (id, log line, in-flight count), ``/metrics``,
``/healthz``, ``/readyz``, and draining on SIGTERM.

``RequestEdge`` is the outermost middleware: every HTTP request gets its request id here (the
caller's ``x-request-id`` when sane, else a new one), returned on every answer and used by the usage
log and error bodies; when the answer is sent, it writes the request's one log line and counts it.
Probes (``/healthz``, ``/readyz``, ``/metrics``) are neither logged nor counted.

Draining: SIGTERM makes ``/readyz`` answer 503 at once, then the process keeps serving until its
requests in flight have finished (at least ``drain_seconds``, at most the graceful timeout) and only
then lets uvicorn close the listener — so a load balancer sees the 503 before connections are refused.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import time
from types import FrameType
from typing import Any, cast

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate import __version__, logs, metrics
from imagegate.api import errors
from imagegate.api.render import json_response
from imagegate.core.errors import AuthenticationFailed, NotFound
from imagegate.db.models import Hold, Task, WebhookDelivery
from imagegate.db.status import IN_PROGRESS, PENDING, QUEUED
from imagegate.state import AppState

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class Drain:
    """This process's draining flag and its count of requests in flight."""

    def __init__(self, *, minimum: float = 0.0, grace: float = 10.0) -> None:
        self.draining = False
        self.in_flight = 0
        self.minimum = minimum
        self.grace = grace
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Take SIGTERM over (from uvicorn, whose handler runs once the drain is over)."""
        previous = signal.getsignal(signal.SIGTERM)
        loop = asyncio.get_running_loop()

        def handler(sig: int, frame: FrameType | None) -> None:
            if self.draining:
                return  # a second SIGTERM (the supervisor's after the group's) changes nothing
            self.draining = True
            loop.call_soon_threadsafe(self._start, previous, sig)

        signal.signal(signal.SIGTERM, handler)

    def _start(self, previous: Any, sig: int) -> None:
        self._task = asyncio.ensure_future(self._then_exit(previous, sig))

    async def _then_exit(self, previous: Any, sig: int) -> None:
        logs.get("imagegate.lifecycle").info("draining", in_flight=self.in_flight, pid=os.getpid())
        started = time.monotonic()
        await asyncio.sleep(self.minimum)
        while self.in_flight > 0 and time.monotonic() - started < self.grace:
            await asyncio.sleep(0.05)
        if callable(previous):
            previous(sig, None)
        else:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)


class RequestEdge:
    """The outermost middleware: the request id, the in-flight count, the request's log line."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        given = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                given = v
                break
        ctx = logs.begin(logs.request_id_from(given))
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                for k, _ in headers:
                    if k == b"x-request-id":
                        break
                else:
                    message["headers"] = [*headers, (b"x-request-id", ctx.id.encode())]
            await send(message)

        drain = self.drain
        drain.in_flight += 1
        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            drain.in_flight -= 1
            total = time.perf_counter() - ctx.started
            metrics.request_done(status, str(ctx.fields.get("surface", "")) if ctx.sync_job else None,
                                 total, ctx.upstream)
            logs.request_done(ctx, scope["method"], scope["path"], status, total)


# ---- routes -------------------------------------------------------------------------------------

probes = APIRouter(tags=["health"])
"""``/healthz`` and ``/readyz``; ``router`` adds ``/metrics`` (unless it has a port of its own)."""


def _state(request: Request) -> AppState:
    return cast(AppState, request.app.state.ig)


@probes.get("/healthz", summary="Liveness: the process answers (no dependency is checked)",
            openapi_extra={"security": []})
async def healthz(request: Request) -> Response:
    state = _state(request)
    # Redis down is "degraded", not down: requests are served, tasks finish through polling.
    redis = [h for h in (state.limiter.healthy, state.events.healthy) if h is not None]
    body = {"status": "ok" if all(redis) else "degraded", "version": __version__}
    if redis:
        body["redis"] = "ok" if all(redis) else "unreachable"
    return json_response(body)


@probes.get("/readyz", include_in_schema=False)  # an operator's probe, like /metrics
async def readyz(request: Request) -> Response:
    """200 when the database, the storage and a usable channel per served model answer; 503 naming the
    failing check otherwise, and at once while draining."""
    state, drain = _state(request), cast(Drain, request.app.state.drain)
    checks = await readiness(state, drain)
    ready = all(v == "ok" for k, v in checks.items() if k != "redis")
    return json_response({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


async def readiness(state: AppState, drain: Drain) -> dict[str, str]:
    checks: dict[str, str] = {"draining": "draining" if drain.draining else "ok"}
    checks["database"] = await _check(_database(state))
    checks["storage"] = await _check(_storage(state))
    if state.limiter.healthy is not None:  # Redis configured: unreachable degrades, the process still serves
        checks["redis"] = "ok" if state.limiter.healthy else "unreachable (degraded: limits counted per process)"
    unserved = [m for m in state.router.models()
                if not any(state.gateway.health.state(r.channel.name) != "open" for r in state.router.routes(m))]
    checks["channels"] = "ok" if state.router.models() and not unserved else \
        f"no usable channel for {', '.join(unserved)}" if unserved else "no model is served"
    return checks


async def _check(probe: Any) -> str:
    try:
        await asyncio.wait_for(probe, timeout=2.0)
    except Exception as exc:  # any failure is the answer, named
        return f"{type(exc).__name__}: {exc}"[:200]
    return "ok"


async def _database(state: AppState) -> None:
    async with state.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _storage(state: AppState) -> None:
    path = state.store.local_path("readyz")
    if path is not None and not os.access(path.parent, os.W_OK):
        raise OSError(f"{path.parent} is not a writable directory")
    await state.store.stat("readyz")


def metrics_token(request: Request) -> str | None:
    settings = _state(request).settings
    return settings.metrics_token or settings.admin_token


async def metrics_endpoint(request: Request) -> Response:
    token = metrics_token(request)
    if token is None and not request.app.state.metrics_open:
        raise NotFound("Not Found")
    if token is not None:
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise AuthenticationFailed("/metrics needs 'Authorization: Bearer <metrics_token or admin token>'.")
    body = metrics.exposition(await database_families(_state(request).sessions))
    return Response(body, media_type=metrics.CONTENT_TYPE)


router = APIRouter()
router.include_router(probes)
router.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)


class MetricsServer:
    """``/metrics`` alone on ``metrics_port``: every worker listens on it (``SO_REUSEPORT``), any
    of them answers for all (multi-process mode)."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None]) -> None:
        self.server, self.task = server, task

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def metrics_server(app: FastAPI, port: int | None) -> MetricsServer | None:
    if port is None:
        return None
    side = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    side.state.ig, side.state.metrics_open = app.state.ig, True  # no token configured: open on its own port
    side.add_api_route("/metrics", metrics_endpoint, methods=["GET"])
    errors.install(side)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    host = cast(AppState, app.state.ig).settings.metrics_host
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(side, log_level="warning", access_log=False, lifespan="off"))
    # ``_serve``, not ``serve``: the main server owns the signal handlers.
    task = asyncio.create_task(server._serve(sockets=[sock]))
    return MetricsServer(server, task)


async def database_families(sessions: async_sessionmaker[AsyncSession]) -> list[Metric]:
    """The shared numbers, read now: a few aggregate queries on indexed columns."""
    now = time.time()
    async with sessions() as s:
        by_status = dict((await s.execute(
            select(Task.status, func.count()).where(Task.status.in_((QUEUED, IN_PROGRESS))).group_by(Task.status)
        )).tuples().all())
        oldest = await s.scalar(select(func.min(Task.submit_time)).where(Task.status == QUEUED))
        backlog = await s.scalar(select(func.count()).select_from(WebhookDelivery)
                                 .where(WebhookDelivery.status == PENDING))
        holds, held = (await s.execute(select(func.count(), func.coalesce(func.sum(Hold.amount), 0))
                                       .where(Hold.settled.is_(False)))).one()
    tasks = GaugeMetricFamily("imagegate_tasks", "Async tasks by status.", labels=["status"])
    for status in (QUEUED, IN_PROGRESS):
        tasks.add_metric([status.lower()], by_status.get(status, 0))
    return [
        tasks,
        GaugeMetricFamily("imagegate_task_oldest_queued_seconds", "Age of the oldest queued task.",
                          value=max(0.0, now - oldest) if oldest is not None else 0.0),
        GaugeMetricFamily("imagegate_webhook_backlog", "Webhook deliveries still pending.", value=backlog or 0),
        GaugeMetricFamily("imagegate_holds_open", "Unsettled holds.", value=holds),
        GaugeMetricFamily("imagegate_held_amount", "Money held by unsettled holds, in micro-units.", value=held),
    ]

