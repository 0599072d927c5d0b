"""Task workers: claim a due task, run one ``Gateway.step`` of it, persist, repeat.

Per gateway process one ``TaskRunner`` runs:

- a dispatcher that claims up to ``tasks.workers`` tasks at a time (one statement) and runs one
  step of each concurrently. It wakes at once on a submission in this process
  (``TaskService.wakeup``) or, with Redis, in any replica (``events.TASKS``), when a step it
  released becomes due (a timer), when a slot frees, and otherwise polls the database every
  ``tasks.poll_seconds`` for work other processes queued (the fallback when Redis is down);
- a keeper per running step that renews its lease, and cancels the step if the lease was lost;
- maintenance: the reaper (expired leases back to the queue) and the retention cleanup;
- the webhook sender (``tasks/webhooks.py``).

A step never holds a transaction across an upstream call. After a first step (the submission)
the upstream handles are persisted at once, so a gateway killed later resumes polling them
instead of submitting again. A finished task is marked terminal, its hold settled and its
webhook enqueued in one transaction: never charged without being finished, never finished
without being settled, never a webhook for an unfinished task.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import time
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate import logs
from imagegate.accounts import Principal
from imagegate.config import TasksConfig
from imagegate.core import errors
from imagegate.core.errors import ImagegateError
from imagegate.core.job import ImageJob, Partial, PartialSink
from imagegate.db.models import Task, WebhookDelivery
from imagegate.db.status import FAILURE, PENDING, SUCCESS
from imagegate.gateway import Gateway, JobState, Outcome
from imagegate.routing import Route
from imagegate.tasks.queue import TaskQueue
from imagegate.tasks.result import TaskResult
from imagegate.tasks.service import UPLOAD_PREFIX, TaskService
from imagegate.tasks.webhooks import WebhookSender

log = logging.getLogger("imagegate.tasks")
lifecycle = logs.get("imagegate.tasks")

SUBMITTED_PROGRESS = 25
POLLING_CEILING = 90
RETENTION_EVERY = 600.0


class LeaseLost(Exception):
    """Another owner holds the task now (this one stalled past its lease)."""


class TaskRunner:
    """The background side of async mode in one gateway process."""

    def __init__(self, cfg: TasksConfig, sessions: async_sessionmaker[AsyncSession], gateway: Gateway,
                 service: TaskService, webhooks: WebhookSender) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.gateway = gateway
        self.queue = TaskQueue(sessions)
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wake = service.wakeup
        self.webhooks = webhooks
        self._saving: set[asyncio.Task[None]] = set()  # partial images being stored
        self.running: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.cfg.workers > 0:
            self._loops.append(asyncio.create_task(self._dispatch(), name="tasks-dispatch"))
        self._loops.append(asyncio.create_task(self._maintain(), name="tasks-maintain"))
        self._loops.append(asyncio.create_task(self.webhooks.run(), name="tasks-webhooks"))

    async def stop(self) -> None:
        """Cancel every loop and step, then hand this process's leases back so another process
        (or this one restarted) resumes them at once instead of after the lease expires."""
        work = [*self._loops, *self.running]
        for t in work:
            t.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        await self.webhooks.stop()
        with contextlib.suppress(Exception):
            await self.queue.release_all(self.owner)

    # ---- the dispatcher ----------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            self.wake.clear()
            try:
                free = self.cfg.workers - len(self.running)
                claimed = await self.queue.claim(self.owner, free, self.cfg.lease_seconds) if free > 0 else []
            except Exception:
                log.exception("could not claim tasks")
                claimed = []
            for task in claimed:
                t = asyncio.create_task(self._run(task), name=f"task-{task.id}")
                self.running.add(t)
                t.add_done_callback(self._step_done)
            if claimed and len(claimed) == free:
                continue  # maybe more are due; the next round finds no free slot and waits
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.cfg.poll_seconds)

    def _step_done(self, t: asyncio.Task[None]) -> None:
        self.running.discard(t)
        self.wake.set()  # a slot is free

    def _wake_at(self, when: float) -> None:
        """Wake the dispatcher once the wall clock (which ``run_after`` and the claim use) reaches
        ``when``. The timer runs on the loop's monotonic clock; where the two drift apart (a
        slewed or virtualised wall clock) it may fire early, and a claim then would find nothing
        due and sleep a whole ``poll_seconds``: so it re-arms until ``when`` has really passed."""
        loop = asyncio.get_running_loop()

        def fire() -> None:
            left = when - time.time()
            if left > 0:
                loop.call_later(left + 0.001, fire)
            else:
                self.wake.set()

        loop.call_later(max(0.0, when - time.time()), fire)

    # ---- one step of one task ----------------------------------------------------------------

    async def _run(self, task: Task) -> None:
        step = asyncio.create_task(self._advance(task))
        keeper = asyncio.create_task(self._keep_lease(task.id, step))
        try:
            await step
        except asyncio.CancelledError:
            if not keeper.done() or keeper.cancelled():
                raise  # shutdown, not a lost lease
            log.warning("task %s: lease lost during a step; another worker resumes it", task.id)
        except LeaseLost:
            log.warning("task %s: lease lost; another worker resumes it", task.id)
        except Exception:
            log.exception("task %s: step crashed", task.id)
        finally:
            keeper.cancel()

    async def _keep_lease(self, task_id: str, step: asyncio.Task[None]) -> None:
        lease = self.cfg.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if await self.queue.renew(task_id, self.owner, lease):
                    continue
            except Exception:
                log.exception("task %s: could not renew the lease", task_id)
                continue  # the next try may work; the lease still has 2/3 left
            step.cancel()
            return

    async def _advance(self, task: Task) -> None:
        job = ImageJob.model_validate(task.request)
        jstate = JobState.model_validate(task.state or {})
        jstate.owner = task.account_id
        lifecycle.debug("task step", task_id=task.id, attempt=task.attempts, channel=jstate.channel or "")
        if time.time() >= task.deadline_at:
            await self._fail(task, job, jstate, errors.UpstreamTimeout(
                f"The task did not finish within its deadline of {int(task.deadline_at - task.submit_time)} s."))
            return
        try:
            job, routes = self.gateway.router.plan(job)
        except ImagegateError as exc:  # the configuration changed under a queued task
            await self._fail(task, job, jstate, exc)
            return
        first = not jstate.calls
        try:
            wait = await self.gateway.step(
                job, jstate, routes, lambda: self.gateway.resolve_inputs(job, account=task.account_id),
                persist=True, deadline_at=task.deadline_at,
                on_partial=self._partials(task, jstate) if job.partial_images else None)
            if wait is None:
                outcome = self.gateway.outcome(job, jstate, routes)
        except ImagegateError as exc:
            await self._fail(task, job, jstate, exc, routes)
            return
        except Exception:
            log.exception("task %s: unexpected error in a step", task.id)
            await self._fail(task, job, jstate, ImagegateError(
                "The gateway had an internal error while running this task."), routes)
            return
        if wait is not None:
            await self._release(task, jstate, wait, first, routes)
            return
        await self._succeed(task, job, jstate, outcome)

    def _partials(self, task: Task, jstate: JobState) -> PartialSink:
        """A step's partial images: each stored as a blob and recorded in the task's state at once
        (in order), so ``GET /v1/images/tasks/{id}`` shows the latest while the task runs."""
        lock = asyncio.Lock()
        mark = self.gateway.signer.owner_tag(task.account_id)

        async def keep(partial: Partial) -> None:
            data = partial.data if partial.data is not None else base64.b64decode(partial.b64 or "")
            async with lock:
                jstate.partial = await self.gateway.store.put(data, content_type=partial.mime, owner=mark)
                await self.queue.save_state(task.id, self.owner, jstate.model_dump(mode="json"))

        def sink(partial: Partial) -> None:
            saving = asyncio.ensure_future(keep(partial))
            self._saving.add(saving)
            saving.add_done_callback(self._saving.discard)

        return sink

    async def _release(self, task: Task, jstate: JobState, wait: float, first: bool, routes: list[Route]) -> None:
        if first:
            progress = max(SUBMITTED_PROGRESS, jstate.progress)
        else:  # creep towards the ceiling while polling; trust a higher upstream figure
            progress = max(jstate.progress, task.progress + max(1, (POLLING_CEILING - task.progress) // 5))
        run_after = min(time.time() + wait, task.deadline_at)
        ok = await self.queue.release(task.id, self.owner, run_after=run_after,
                                      state=jstate.model_dump(mode="json"),
                                      progress=min(progress, POLLING_CEILING), platform=_platform(jstate, routes))
        if not ok:
            raise LeaseLost(task.id)
        self._wake_at(run_after)

    async def _succeed(self, task: Task, job: ImageJob, jstate: JobState, outcome: Outcome) -> None:
        result = TaskResult(delivered=outcome.delivered, usage=outcome.usage, created=int(time.time()),
                            text=outcome.text, dropped=outcome.dropped, failures=outcome.failures)
        await self._finish(task, job, jstate, status=SUCCESS, result=result, fail_reason="",
                           platform=outcome.provider)

    async def _fail(self, task: Task, job: ImageJob, jstate: JobState, exc: ImagegateError,
                    routes: list[Route] | None = None) -> None:
        await self._finish(task, job, jstate, status=FAILURE, result=None, fail_reason=exc.message,
                           platform=_platform(jstate, routes or []), code=exc.code)

    async def _finish(self, task: Task, job: ImageJob, jstate: JobState, *, status: str, result: TaskResult | None,
                      fail_reason: str, platform: str | None, code: str = "success") -> None:
        now = time.time()
        delivered = len(result.delivered) if result else 0
        async with self.sessions.begin() as s:
            # Settle first, in the same transaction: if the task turns out to be finished
            # already (lease lost), LeaseLost rolls the settlement back with it.
            cost = await self.gateway.billing.settle(task.hold_id, job, delivered,
                                                   result.usage if result else None, session=s)
            if result is not None:
                result.cost = cost
            ok = await TaskQueue.finish(s, task.id, self.owner, status=status,
                                        result=result.model_dump(mode="json") if result else None,
                                        fail_reason=fail_reason, state=jstate.model_dump(mode="json"),
                                        platform=platform, now=now)
            if not ok:
                raise LeaseLost(task.id)
            if task.webhook_url:
                s.add(WebhookDelivery(id=f"msg_{uuid.uuid4().hex}", task_id=task.id, key_id=task.key_id,
                                      url=task.webhook_url, payload="", status=PENDING, attempts=0,
                                      next_attempt_at=now, last_error="", created_at=now))
        if task.webhook_url:
            self.webhooks.wake.set()
        who = Principal(task.key_id, task.account_id, None, None, False)
        self.gateway.usage_log.record(task.id, who, job, channel=jstate.channel or "", status=code,
                                    images=delivered, cost=result.cost if result else 0,
                                    started=time.monotonic() - (now - task.submit_time),
                                    blobs=[d.blob for d in result.delivered if d.blob] if result else None)
        lifecycle.info("task finished", task_id=task.id, status=status, code=code, model=job.model,
                       channel=jstate.channel or "", images=delivered, cost=result.cost if result else 0,
                       seconds=round(now - task.submit_time, 3), attempts=task.attempts)

    # ---- maintenance -------------------------------------------------------------------------

    async def _maintain(self) -> None:
        every = min(5.0, self.cfg.lease_seconds / 2)
        last_cleanup = 0.0
        while True:
            try:
                if await self.queue.reap():
                    self.wake.set()
                if time.monotonic() - last_cleanup > RETENTION_EVERY:
                    last_cleanup = time.monotonic()
                    await self.cleanup(time.time() - self.cfg.retention_days * 86400)
            except Exception:
                log.exception("task maintenance failed")
            await asyncio.sleep(every)

    async def blobs_submitted_before(self, cutoff: float) -> set[str]:
        """Blobs owned by the tasks submitted before ``cutoff`` that still exist: uploads and
        results, and the images an unfinished task has delivered so far (what the image
        retention sweeper must keep: ``storage/retention.py``)."""
        kept: set[str] = set()
        async with self.sessions() as s:
            rows = await s.stream_scalars(select(Task).where(Task.submit_time < cutoff)
                                          .execution_options(yield_per=500))
            async for task in rows:
                kept.update(blobs_of(task))
                if task.state:
                    kept.update(d.blob for d in JobState.model_validate(task.state).delivered if d.blob)
        return kept

    async def cleanup(self, before: float) -> int:
        """Delete tasks finished before ``before``, their blobs first (a crash in between only
        leaves rows whose blobs are already gone, and the next run deletes them)."""
        removed = 0
        while batch := await self.queue.expired(before):
            for task in batch:
                for key in blobs_of(task):
                    await self.gateway.store.delete(key)
            await self.queue.delete([t.id for t in batch])
            removed += len(batch)
        return removed


def _platform(jstate: JobState, routes: list[Route]) -> str | None:
    for r in routes:
        if r.channel.name == jstate.channel:
            return r.channel.provider
    return None


def blobs_of(task: Task) -> list[str]:
    """Blob keys a task owns: its uploaded inputs and its stored results."""
    job = ImageJob.model_validate(task.request)
    sources = [*job.images, *([job.mask] if job.mask else [])]
    keys = [s.blob for s in sources if s.blob and s.blob.startswith(UPLOAD_PREFIX + "/")]
    if task.result:
        keys += [d.blob for d in TaskResult.model_validate(task.result).delivered if d.blob]
    return keys
