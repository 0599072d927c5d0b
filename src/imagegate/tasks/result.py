"""What a finished task keeps of its outcome (``tasks.result``); the surfaces render it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from imagegate.core.job import Usage
from imagegate.gateway import Delivered


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
