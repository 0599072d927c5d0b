"""The ASGI application: routes, error rendering, body limits, and the process lifespan."""

from __future__ import annotations

import ctypes
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate import __version__, logs, metrics
from imagegate.api import admin, chat, console, docs, errors, files, gemini, images, keys, models, observe, tasks, usage
from imagegate.api.idempotency import IdempotencyMiddleware
from imagegate.api.observe import Drain, RequestEdge, metrics_server
from imagegate.api.tasks import task_object
from imagegate.config import Settings, load_settings
from imagegate.core.errors import PayloadTooLarge
from imagegate.state import build_state
from imagegate.storage.retention import image_sweeper
from imagegate.tasks.webhooks import WebhookSender
from imagegate.tasks.worker import TaskRunner


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 — by Content-Length up front, and by
    counting for chunked bodies — before any handler buffers them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"Request body is larger than {self.limit // 2**20} MB.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await errors.error_response(scope["path"], self.too_large())(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise self.too_large()
            return message

        await self.app(scope, counted, send)


def keep_image_buffers_on_the_heap() -> None:
    """Tell glibc to keep freed multi-megabyte buffers in the heap.

    By default glibc serves every allocation over 128 KB with its own ``mmap`` and returns it to
    the kernel when freed, so each image's buffers (the upstream body, the parsed base64, the
    decoded bytes) are page-faulted in anew for every request. Raising the thresholds halved the
    kernel time per 2 MB image in ``bench/`` (docs/benchmarks.md, scenario 2). No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    mallopt(m_mmap_threshold, 64 * 2**20)
    mallopt(m_trim_threshold, 256 * 2**20)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    logs.setup(level=settings.log_level, fmt=settings.log_format)
    drain = Drain(minimum=settings.drain_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keep_image_buffers_on_the_heap()
        state = await build_state(settings)
        app.state.ig = state
        app.state.store, app.state.urls = state.store, state.urls  # used by the files route
        webhooks = WebhookSender(settings.tasks, state.sessions, state.safe, render=partial(task_object, state))
        runner = TaskRunner(settings.tasks, state.sessions, state.gateway, state.tasks, webhooks)
        runner.start()  # async tasks: workers, reaper, webhook outbox
        drain.install()  # SIGTERM: /readyz answers 503 until the requests in flight are done
        metrics_port = await metrics_server(app, settings.metrics_port)  # /metrics on its own port
        sweeper = image_sweeper(state.store, runner.blobs_submitted_before, settings.storage)  # image retention
        if sweeper is not None:
            sweeper.start()
        try:
            yield
        finally:
            if sweeper is not None:
                await sweeper.stop()
            await runner.stop()
            await state.aclose()
            if metrics_port is not None:
                await metrics_port.stop()
            metrics.process_exited()

    app = FastAPI(title="imagegate", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="One DALL·E-style API in front of many image-generation upstreams.")
    errors.install(app)
    docs.install(app)  # /docs and /redoc without a CDN; security and error shapes in /openapi.json
    for module in (images, models, files, usage, tasks, keys, chat, gemini):
        app.include_router(module.router)
    if settings.admin_token:  # no token, no admin API: /admin/ paths are plain 404s
        app.include_router(admin.router)
    console.install(app)  # /console: the web console (pages, sign-in, the proxy to the API above)

    app.state.drain, app.state.metrics_open = drain, False
    app.include_router(observe.router if settings.metrics_port is None else observe.probes)  # /healthz /readyz /metrics

    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(BodyLimit, limit=settings.limits.max_body_bytes)  # limits every body
    app.add_middleware(RequestEdge, drain=drain)  # outermost: request id, the request's log line, metrics
    return app
