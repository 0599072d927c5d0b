"""The caller's async tasks: ``GET /v1/images/tasks/{task_id}`` (status and result),
``GET /v1/images/tasks`` (the account's tasks, newest first) and
``GET /v1/images/tasks/{task_id}/webhooks`` (the task's webhook deliveries and their attempts).

``task_object`` is the task as the contract shows it — the ``data`` of the GET, and the body of
the task's webhook (``app.py`` hands it to the webhook sender), so both say the same thing."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import and_, or_, select
from starlette.responses import Response

from imagegate.api import chat, gemini, images
from imagegate.api.answer import Render, Result
from imagegate.api.deps import PrincipalDep, StateDep
from imagegate.api.render import blob_url, json_response
from imagegate.core.errors import InvalidRequest, TaskNotFound
from imagegate.core.job import ImageJob, Surface
from imagegate.db.models import Task
from imagegate.db.status import IN_PROGRESS, PENDING, SUCCESS, TASK_ACTIVE
from imagegate.state import AppState
from imagegate.tasks.queue import TaskQueue, public_status
from imagegate.tasks.result import TaskResult
from imagegate.tasks.webhooks import deliveries_of

router = APIRouter()


def _seconds(t: float | None) -> int:
    return int(t) if t is not None else 0


RENDERERS: dict[Surface, Render] = {"images": images.render, "chat": chat.render, "gemini": gemini.render}


async def task_object(state: AppState, task: Task) -> dict[str, Any]:
    """The contract's task object. ``data`` carries the answer only once the task succeeded (the
    surface's own body: images as URLs or base64, as ``response_format`` asked); it is null
    before and on failure."""
    data: dict[str, Any] | None = None
    if task.status == SUCCESS and task.result is not None:
        job = ImageJob.model_validate(task.request)
        result = Result.of_task(task.id, job, TaskResult.model_validate(task.result))
        # In the protocol the task was submitted through: a chat or Gemini client reads its own
        # body, exactly (google-genai refuses unknown fields); the contract's images task object
        # also names the model, which an ``ImagesResponse`` does not.
        data = await RENDERERS[job.surface](state, result)
        if job.surface == "images":
            data = {**data, "model": task.model}
    elif task.status in TASK_ACTIVE and (task.state or {}).get("partial"):
        # The latest partial image of a running task whose caller asked for ``partial_images``.
        data = {"partial_image_url": blob_url(state, task.state["partial"])}
    return {**_head(task), "data": data, "search_item": ""}


def _head(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "platform": task.platform,
        "action": task.action,
        "status": public_status(task.status),
        "fail_reason": task.fail_reason,
        "submit_time": _seconds(task.submit_time),
        "start_time": _seconds(task.start_time),
        "finish_time": _seconds(task.finish_time),
        "progress": f"{task.progress}%",
    }


def task_summary(state: AppState, task: Task) -> dict[str, Any]:
    """A task in a list: the task object's fields without ``data``, plus the model and its images
    as signed URLs (thumbnails; whatever ``response_format`` the task asked for)."""
    images: list[dict[str, Any]] = []
    if task.status == SUCCESS and task.result is not None:
        for d in TaskResult.model_validate(task.result).delivered:
            if d.blob is not None:
                images.append({"url": blob_url(state, d.blob),
                               "width": d.width, "height": d.height})
    return {**_head(task), "object": "image.task", "model": task.model, "images": images,
            "webhook": task.webhook_url is not None}


async def deliveries(state: AppState, task_id: str) -> list[dict[str, Any]]:
    """The task's webhook deliveries (one per finished task with a webhook) and where each stands."""
    return [{"id": d.id, "object": "webhook.delivery", "task_id": d.task_id, "url": d.url,
             "status": d.status, "attempts": d.attempts, "last_status": d.last_status,
             "last_error": d.last_error or None, "created_at": int(d.created_at),
             "next_attempt_at": int(d.next_attempt_at) if d.status == PENDING else None,
             "paused": paused} for d, paused in await deliveries_of(state.sessions, task_id)]


_TASK_ID = re.compile(r"[0-9a-f]{32}")


async def _find_own(state: AppState, account_id: str, task_id: str) -> Task | None:
    """The account's task ``task_id``; another account's is None exactly like a missing one (ids
    are not a way to probe)."""
    task_id = task_id.lower()
    return await TaskQueue(state.sessions).get(task_id, account_id) if _TASK_ID.fullmatch(task_id) else None


async def _own_task(state: AppState, account_id: str, task_id: str) -> Task:
    task = await _find_own(state, account_id, task_id)
    if task is None:
        raise TaskNotFound(f"No task {task_id.lower()!r} exists for this API key's account.", param="task_id")
    return task


PublicStatus = Literal["in_progress", "success", "failure", "IN_PROGRESS", "SUCCESS", "FAILURE"]


@router.get("/v1/images/tasks", tags=["tasks"], summary="The account's async tasks, newest first")
async def list_tasks(state: StateDep, principal: PrincipalDep, status: PublicStatus | None = None,
                     limit: Annotated[int, Query(ge=1, le=100)] = 20,
                     before: Annotated[str | None, Query(max_length=64,
                                                         description="`next_before` of the previous page")] = None,
                     ) -> Response:
    t = Task
    query = select(t).where(t.account_id == principal.account_id)
    if status is not None:
        wanted = status.upper()
        query = query.where(t.status.in_(TASK_ACTIVE) if wanted == IN_PROGRESS else t.status == wanted)
    if before is not None:
        cursor = await _find_own(state, principal.account_id, before)
        if cursor is None:
            raise InvalidRequest(f"before: no task {before!r} of this account to page from.", param="before")
        query = query.where(or_(t.submit_time < cursor.submit_time,
                                and_(t.submit_time == cursor.submit_time, t.id < cursor.id)))
    async with state.sessions() as s:
        rows = list((await s.execute(query.order_by(t.submit_time.desc(), t.id.desc()).limit(limit + 1))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response({"object": "list", "data": [task_summary(state, r) for r in rows], "has_more": more,
                          "next_before": rows[-1].id if more else None})


@router.get("/v1/images/tasks/{task_id}", tags=["tasks"], summary="Status and result of an async image task")
async def get_task(task_id: str, state: StateDep, principal: PrincipalDep) -> Response:
    task = await _own_task(state, principal.account_id, task_id)
    return json_response({"code": "success", "message": "", "data": await task_object(state, task)})


@router.get("/v1/images/tasks/{task_id}/webhooks", tags=["tasks"],
            summary="The task's webhook deliveries: status, attempts, the last answer")
async def task_webhooks(task_id: str, state: StateDep, principal: PrincipalDep) -> Response:
    task = await _own_task(state, principal.account_id, task_id)
    return json_response({"object": "list", "data": await deliveries(state, task.id)})
