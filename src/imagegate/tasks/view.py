"""A task row → the public task object (the ``data`` of ``GET /v1/images/tasks/{id}``, and the
body of its webhook). Shared by the route and the webhook sender so both say the same thing."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagegate.api.render import image_items
from imagegate.core.job import ImageJob, Usage
from imagegate.db.models import Task
from imagegate.gateway import Delivered
from imagegate.state import AppState
from imagegate.tasks.queue import SUCCESS, public_status


class TaskResult(BaseModel):
    """What a successful task keeps in ``tasks.result``: stored blobs, never base64."""

    model_config = ConfigDict(extra="ignore")

    delivered: list[Delivered]
    usage: Usage | None = None
    created: int
    text: str | None = None
    dropped: list[str] = Field(default_factory=list)
    failures: list[str] = Field(default_factory=list)
    cost: int = 0


def _seconds(t: float | None) -> int:
    return int(t) if t is not None else 0


async def task_object(state: AppState, task: Task) -> dict[str, Any]:
    """The contract's task object. ``data`` carries the images (URLs or base64, as the request's
    ``response_format`` asked) only once the task succeeded; it is null before and on failure."""
    data: dict[str, Any] | None = None
    if task.status == SUCCESS and task.result is not None:
        result = TaskResult.model_validate(task.result)
        fmt = ImageJob.model_validate(task.request).response_format
        data = {"data": await image_items(state, result.delivered, fmt), "model": task.model,
                "created": result.created}
        if result.usage is not None:
            data["usage"] = result.usage.model_dump(exclude_none=True)
        if result.delivered:
            first = result.delivered[0]
            if first.width and first.height:
                data["size"] = f"{first.width}x{first.height}"
            data["output_format"] = first.mime.split("/")[-1]
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
