"""The one way every surface answers a request that makes images.

The key may use the model; ``?async=true`` hands the job to the task queue (the task object's
``data`` is later rendered by the same surface, so a chat or Gemini client reads its own
protocol); otherwise the job runs, and the surface's ``render`` turns the ``Result`` into its
body, sent with the request id and the dropped/adjusted-parameter headers. A ``Result`` is what a
finished job leaves — the same whether it comes from a sync ``Outcome`` or a task's stored result.
``answer_stream`` is the same for a caller who streams (``stream: true`` on the Images surface):
partial images as they come, keep-alives, then the surface's final events (``api/sse.py``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.responses import Response

from imagegate import logs
from imagegate.accounts import Principal
from imagegate.api import sse
from imagegate.api.parsing import async_flag
from imagegate.api.render import answer_headers, json_response
from imagegate.core.errors import ContentRefused, InvalidRequest, NoImageReturned
from imagegate.core.job import ImageJob, Partial, Usage
from imagegate.gateway import Delivered, Outcome
from imagegate.routing import adjusted_params, dropped_params
from imagegate.state import AppState
from imagegate.tasks.result import TaskResult


@dataclass(frozen=True)
class Result:
    """A finished job as every surface renders it."""

    id: str
    """The request id (sync) or the task id (async): the answer's own id derives from it."""
    job: ImageJob
    delivered: list[Delivered]
    usage: Usage | None
    text: str | None
    created: int

    @classmethod
    def of(cls, outcome: Outcome, job: ImageJob, request_id: str) -> Result:
        return cls(request_id, job, outcome.delivered, outcome.usage, outcome.text, int(time.time()))

    @classmethod
    def of_task(cls, task_id: str, job: ImageJob, stored: TaskResult) -> Result:
        return cls(task_id, job, stored.delivered, stored.usage, stored.text, stored.created)


Render = Callable[[AppState, Result], Awaitable[dict[str, Any]]]
Refusal = Callable[[ContentRefused | NoImageReturned, ImageJob, str], dict[str, Any]]
"""A surface that answers refusals with a 200 in its own shape (Gemini) instead of an error."""


def new_request_id() -> str:
    """The request's id, given at the edge (``api/observe.py``); a new one outside a request."""
    return logs.current_request_id() or uuid.uuid4().hex


def _log_job(state: AppState, job: ImageJob, principal: Principal, *, sync: bool) -> None:
    ctx = logs.current()
    if ctx is None:
        return
    ctx.sync_job = sync
    ctx.fields.update(surface=job.surface, model=job.model, account=principal.account_id, key_id=principal.key_id)
    if state.settings.log_prompts:
        ctx.fields["prompt"] = job.prompt


async def answer(state: AppState, request: Request, job: ImageJob, principal: Principal, render: Render, *,
                 refusal: Refusal | None = None) -> Response:
    principal.require_model(job.model)
    if async_flag(request):
        _log_job(state, job, principal, sync=False)
        task_id = await state.tasks.submit(job, principal, webhook=request.query_params.get("webhook"))
        logs.annotate(task_id=task_id)
        return json_response({"task_id": task_id, "code": "success", "message": "", "data": task_id})
    request_id = new_request_id()
    _log_job(state, job, principal, sync=True)
    try:
        outcome = await state.gateway.execute(job, principal, request_id=request_id)
    except (ContentRefused, NoImageReturned) as exc:
        if refusal is None:
            raise
        return json_response(refusal(exc, job, request_id), headers=answer_headers(request_id))
    body = await render(state, Result.of(outcome, job, request_id))
    return json_response(body, headers=answer_headers(request_id, outcome.dropped, outcome.adjusted))


@dataclass(frozen=True)
class StreamEvents:
    """How a surface draws a streamed answer as Server-Sent Events."""

    partial: Callable[[Partial, int], bytes]
    """One intermediate image (its 0-based index in the stream)."""
    done: Callable[[AppState, Result], Awaitable[list[bytes]]]
    """The finished job's events."""
    error: sse.RenderError
    keepalive: bytes = b": keep-alive\n\n"


async def answer_stream(state: AppState, request: Request, job: ImageJob, principal: Principal,
                        events: StreamEvents) -> Response:
    """``answer`` for a caller who streams: failures before the stream starts keep their HTTP status
    (``sse.start``); the dropped and adjusted parameters are those of the first channel planned."""
    principal.require_model(job.model)
    if async_flag(request):
        raise InvalidRequest("async=true cannot be combined with stream: true: a task is read back later, a "
                             "stream as it goes.", param="async")
    planned, routes = state.router.plan(job)
    request_id = new_request_id()
    _log_job(state, job, principal, sync=True)
    progress: asyncio.Queue[bytes] = asyncio.Queue()
    count = 0

    def on_partial(partial: Partial) -> None:
        nonlocal count
        progress.put_nowait(events.partial(partial, count))
        count += 1

    task = await sse.start(state.gateway.execute(job, principal, request_id=request_id, on_partial=on_partial))

    async def done(outcome: Outcome) -> list[bytes]:
        return await events.done(state, Result.of(outcome, job, request_id))

    response = sse.stream(task, head=[], keepalive=events.keepalive, render=done, render_error=events.error,
                          tail=[], progress=progress)
    response.headers.update(answer_headers(request_id, dropped_params(planned, routes[0]),
                                           adjusted_params(planned, routes[0])))
    return response
