"""The one way every surface answers a request that makes images.

The key may use the model; ``?async=true`` hands the job to the task queue (the task object's
``data`` is later rendered by the same surface, so a chat or Gemini client reads its own
protocol); otherwise the job runs, and the surface's ``render`` turns the ``Result`` into its
body, sent with the request id and the dropped/adjusted-parameter headers. A ``Result`` is what a
finished job leaves — the same whether it comes from a sync ``Outcome`` or a task's stored result.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.responses import Response

from imagegate.accounts import Principal
from imagegate.api.parsing import async_flag
from imagegate.api.render import answer_headers, json_response
from imagegate.core.errors import ContentRefused, NoImageReturned
from imagegate.core.job import ImageJob, Usage
from imagegate.gateway import Delivered, Outcome
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
    return uuid.uuid4().hex


async def answer(state: AppState, request: Request, job: ImageJob, principal: Principal, render: Render, *,
                 refusal: Refusal | None = None) -> Response:
    principal.require_model(job.model)
    if async_flag(request):
        task_id = await state.tasks.submit(job, principal, webhook=request.query_params.get("webhook"))
        return json_response({"task_id": task_id, "code": "success", "message": "", "data": task_id})
    request_id = new_request_id()
    try:
        outcome = await state.gateway.execute(job, principal, request_id=request_id)
    except (ContentRefused, NoImageReturned) as exc:
        if refusal is None:
            raise
        return json_response(refusal(exc, job, request_id), headers=answer_headers(request_id))
    body = await render(state, Result.of(outcome, job, request_id))
    return json_response(body, headers=answer_headers(request_id, outcome.dropped, outcome.adjusted))
