"""GET /v1/images/tasks/{task_id} (async results) and GET /v1/keys/self (the caller's own key,
with the webhook signing secret its owner needs to verify deliveries)."""

from __future__ import annotations

import re

from fastapi import APIRouter
from starlette.responses import Response

from imagegate.api.deps import PrincipalDep, StateDep
from imagegate.api.render import json_response
from imagegate.core.errors import AuthenticationFailed, TaskNotFound
from imagegate.db.models import ApiKey
from imagegate.tasks.queue import TaskQueue
from imagegate.tasks.view import task_object

router = APIRouter()

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
