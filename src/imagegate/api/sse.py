"""Server-sent events for the surfaces that stream (chat completions, Gemini, OpenAI Images).

An image job is one long wait followed by the whole answer, so "streaming" here means: start the
job, answer failures that happen at once (bad reference image, no credit, an upstream 4xx) with a
real HTTP status, and only then commit to a 200 event stream that carries keep-alives while the
upstream works — proxies drop connections that stay silent for tens of seconds — and the answer
at the end. A job that shows work in progress (partial images on the Images surface) puts events
on a ``progress`` queue, sent between the keep-alives. A client that goes away cancels the job,
which releases its hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from starlette.responses import StreamingResponse

from imagegate.core.errors import ImagegateError
from imagegate.gateway import Outcome

log = logging.getLogger("imagegate.api")

EARLY_WINDOW = 1.5
"""Seconds a streaming request waits for the job before committing to a 200 stream."""
KEEPALIVE_EVERY = 5.0

Render = Callable[[Outcome], Awaitable[list[bytes]]]
RenderError = Callable[[ImagegateError], list[bytes]]


async def start(job: Coroutine[Any, Any, Outcome]) -> asyncio.Task[Outcome]:
    """Run ``job`` in the background; re-raise its error if it fails within ``EARLY_WINDOW``."""
    task = asyncio.ensure_future(job)
    await asyncio.wait({task}, timeout=EARLY_WINDOW)
    if task.done():
        task.result()
    return task


def stream(task: asyncio.Task[Outcome], *, head: list[bytes], keepalive: bytes, render: Render,
           render_error: RenderError, tail: list[bytes],
           progress: asyncio.Queue[bytes] | None = None) -> StreamingResponse:
    """``head``, keep-alives until ``task`` ends, its rendering (or its error's), then ``tail``.
    Events put on ``progress`` while the job runs (partial images) are sent as they come."""

    async def events() -> AsyncIterator[bytes]:
        try:
            for chunk in head:
                yield chunk
            while not task.done():
                if progress is None:
                    await asyncio.wait({task}, timeout=KEEPALIVE_EVERY)
                else:
                    while not progress.empty():
                        yield progress.get_nowait()
                    got = asyncio.ensure_future(progress.get())
                    await asyncio.wait({task, got}, timeout=KEEPALIVE_EVERY, return_when=asyncio.FIRST_COMPLETED)
                    if not got.done():
                        got.cancel()  # the item stays queued: Queue.get takes it only once resumed
                        with contextlib.suppress(asyncio.CancelledError):
                            await got
                    else:
                        yield got.result()
                        continue
                if not task.done():
                    yield keepalive
            while progress is not None and not progress.empty():
                yield progress.get_nowait()
            try:
                chunks = await render(task.result())
            except ImagegateError as exc:
                chunks = render_error(exc)
            except Exception:
                log.exception("streamed job failed")
                chunks = render_error(ImagegateError("The server had an error while processing your request."))
            for chunk in [*chunks, *tail]:
                yield chunk
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    return _response(events())


def fixed(chunks: list[bytes], headers: dict[str, str] | None = None) -> StreamingResponse:
    """An event stream whose events are all known already."""

    async def events() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    response = _response(events())
    response.headers.update(headers or {})
    return response


def _response(events: AsyncIterator[bytes]) -> StreamingResponse:
    # ``X-Accel-Buffering: no`` stops nginx from holding the events back.
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
