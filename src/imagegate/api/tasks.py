"""GET /v1/images/tasks/{task_id} (async results) and GET /v1/keys/self (the caller's own key,
with the webhook signing secret its owner needs to verify deliveries).

``task_object`` is the task as the contract shows it — the ``data`` of the GET, and the body of
the task's webhook (``app.py`` hands it to the webhook sender), so both say the same thing."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from imagegate.api import chat, gemini, images
from imagegate.api.answer import Render, Result
from imagegate.api.deps import PrincipalDep, StateDep
from imagegate.api.render import json_response
from imagegate.core.errors import AuthenticationFailed, TaskNotFound
from imagegate.core.job import ImageJob, Surface
from imagegate.db.models import ApiKey, Task
from imagegate.db.status import SUCCESS, TASK_ACTIVE
from imagegate.state import AppState
from imagegate.tasks.queue import TaskQueue, public_status
from imagegate.tasks.result import TaskResult

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
        data = {"partial_image_url": state.store.url_for(task.state["partial"], ttl=state.settings.url_ttl)}
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
        "data": data,
        "search_item": "",
    }

_TASK_ID = re.compile(r"[0-9a-f]{32}")


@router.get("/v1/images/tasks/{task_id}", tags=["tasks"], summary="Status and result of an async image task")
async def get_task(task_id: str, state: StateDep, principal: PrincipalDep) -> Response:
    task_id = task_id.lower()
    # Another account's task is answered exactly like a missing one: ids are not a way to probe.
    task = await TaskQueue(state.sessions).get(task_id, principal.account_id) if _TASK_ID.fullmatch(task_id) else None
    if task is None:
        raise TaskNotFound(f"No task {task_id!r} exists for this API key's account.", param="task_id")
    return json_response({"code": "success", "message": "", "data": await task_object(state, task)})


@router.get("/v1/keys/self", tags=["keys"], summary="The calling API key, with its webhook signing secret")
async def key_self(state: StateDep, principal: PrincipalDep) -> Response:
    async with state.sessions() as s:
        key = await s.get(ApiKey, principal.key_id)
    if key is None:  # deleted since the key cache verified it
        raise AuthenticationFailed("Incorrect API key provided.")
    return json_response({
        "id": key.id, "object": "api_key", "account_id": key.account_id, "name": key.name,
        "prefix": key.prefix, "models": key.models, "rpm": key.rpm, "created_at": int(key.created_at),
        "expires_at": int(key.expires_at) if key.expires_at is not None else None,
        "webhook_secret": key.webhook_secret,
    })
