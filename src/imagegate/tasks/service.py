"""Async task submission (issue #4 replaces this with the durable queue)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.accounts import Principal
from imagegate.config import Settings
from imagegate.core.errors import InvalidRequest
from imagegate.core.job import ImageJob
from imagegate.gateway import Gateway


class TaskService:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], gateway: Gateway) -> None:
        self.settings = settings
        self.sessions = sessions
        self.gateway = gateway

    async def submit(self, job: ImageJob, principal: Principal, *, webhook: str | None) -> str:
        raise InvalidRequest("Async mode is not available on this gateway yet.", param="async")
