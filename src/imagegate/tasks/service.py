"""Async submission: validate like the sync path, persist the job, hold the money, wake a worker.

Everything a caller can get wrong is refused here, synchronously, with the same 4xx the sync
path gives (unknown model, unsupported parameter, a damaged upload, a private webhook address,
no balance). What needs the network — fetching reference-image URLs — happens in the worker; a
failure there ends the task as ``FAILURE`` with the reason.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate import imaging
from imagegate.accounts import Principal
from imagegate.config import Settings
from imagegate.core.errors import InvalidRequest
from imagegate.core.job import ImageJob, ImageSource
from imagegate.db.models import Task
from imagegate.db.status import QUEUED
from imagegate.events import TASKS, Events
from imagegate.gateway import Gateway

MAX_WEBHOOK_URL = 2048
UPLOAD_PREFIX = "task-in"
"""Blob key prefix of files uploaded with an async request (deleted with the task)."""


class TaskService:
    """Accepts async jobs (``state.tasks``). ``wakeup`` is set on every submission so this
    process's workers start at once instead of at their next database poll; with Redis
    (``events``) the submission is announced too, and a submission on any replica sets it."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], gateway: Gateway,
                 events: Events) -> None:
        self.settings = settings
        self.sessions = sessions
        self.gateway = gateway
        self.wakeup = asyncio.Event()
        self.events = events
        events.on(TASKS, self.wakeup.set)

    async def submit(self, job: ImageJob, principal: Principal, *, webhook: str | None) -> str:
        """Validate and persist ``job``; return its 32-hex task id."""
        webhook = self._check_webhook(webhook)
        planned, routes = self.gateway.router.plan(job)
        self._check_uploads(planned)
        task_id = uuid.uuid4().hex
        now = time.time()
        deadline = now + self.settings.tasks.deadline
        stored = await self._store_uploads(job)
        try:
            # The hold outlives the deadline by an hour: the task settles it itself, and a
            # gateway that was down past the deadline still fails the task (and releases) on start.
            hold = await self.gateway.billing.hold(principal, planned, task_id, ttl=deadline - now + 3600)
        except BaseException:
            await self._drop_uploads(stored)
            raise
        try:
            async with self.sessions.begin() as s:
                s.add(Task(
                    id=task_id, account_id=principal.account_id, key_id=principal.key_id,
                    action=job.action, model=job.model, platform=routes[0].channel.provider,
                    request=stored.model_dump(mode="json", exclude_unset=True),
                    status=QUEUED, progress=0, fail_reason="", state={}, result=None,
                    submit_time=now, deadline_at=deadline, attempts=0, run_after=now,
                    webhook_url=webhook, hold_id=hold,
                ))
        except BaseException:
            await asyncio.shield(self.gateway.billing.settle(hold, planned, 0, None))
            await self._drop_uploads(stored)
            raise
        self.wakeup.set()
        self.events.notify(TASKS)  # other replicas' idle workers (a scheduled publish, no wait)
        return task_id

    def _check_webhook(self, webhook: str | None) -> str | None:
        webhook = (webhook or "").strip()
        if not webhook:  # ``?webhook=`` with nothing after it: no webhook
            return None
        if not webhook.startswith(("http://", "https://")):
            raise InvalidRequest("webhook must be an http:// or https:// URL.", param="webhook")
        if len(webhook) > MAX_WEBHOOK_URL:
            raise InvalidRequest(f"webhook is longer than {MAX_WEBHOOK_URL} characters.", param="webhook")
        # The same rules as reference images: a private or loopback literal is refused now;
        # names are re-checked when they resolve, at every delivery attempt.
        self.gateway.safe.check_url(webhook, param="webhook")
        return webhook

    def _check_uploads(self, job: ImageJob) -> None:
        """The checks of ``Gateway.resolve_inputs`` that need no network, on uploaded bytes."""
        limit, pixels = self.gateway.max_file_bytes, self.gateway.max_image_pixels
        first: imaging.ImageInfo | None = None
        for i, src in enumerate(job.images):
            if src.data is None:
                continue
            if len(src.data) > limit:
                raise InvalidRequest(f"image[{i}] is larger than {limit // 2**20} MB.",
                                     param=f"image[{i}]", code="image_too_large")
            info = imaging.probe(src.data, param=f"image[{i}]", max_pixels=pixels)
            if i == 0:
                first = info
        if job.mask is not None and job.mask.data is not None:
            if len(job.mask.data) > limit:
                raise InvalidRequest(f"mask is larger than {limit // 2**20} MB.", param="mask",
                                     code="image_too_large")
            if first is not None:
                imaging.check_mask(job.mask.data, first, param="mask", max_pixels=pixels)
            else:
                imaging.probe(job.mask.data, param="mask", max_pixels=pixels)

    async def _store_uploads(self, job: ImageJob) -> ImageJob:
        """Uploaded bytes → blobs, so the persisted request holds only ``blob`` or ``url``."""
        async def stored(src: ImageSource) -> ImageSource:
            if src.data is None:
                return src
            mime = imaging.sniff_mime(src.data) or "application/octet-stream"
            key = await self.gateway.store.put(src.data, content_type=mime, prefix=UPLOAD_PREFIX)
            return ImageSource(blob=key, mime=mime)

        if not any(s.data is not None for s in [*job.images, *([job.mask] if job.mask else [])]):
            return job
        update: dict[str, object] = {"images": [await stored(s) for s in job.images]}
        if job.mask is not None:
            update["mask"] = await stored(job.mask)
        return job.model_copy(update=update)

    async def _drop_uploads(self, job: ImageJob) -> None:
        for src in [*job.images, *([job.mask] if job.mask else [])]:
            if src.blob is not None and src.blob.startswith(UPLOAD_PREFIX + "/"):
                await self.gateway.store.delete(src.blob)
