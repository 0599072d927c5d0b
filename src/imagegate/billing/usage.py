"""The per-request usage log, written in batches off the request path.

Rows are buffered in memory and inserted together every ``interval`` seconds (or at shutdown):
one transaction per batch instead of one per request keeps SQLite's single writer free for the
ledger. The ledger, not this log, is the record of money; a crash loses at most one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from sqlalchemy import case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate import logs, metrics
from imagegate.accounts import Principal
from imagegate.core.job import ImageJob
from imagegate.db.models import UsageRecord

log = logging.getLogger("imagegate.usage")


class UsageLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], interval: float = 0.5) -> None:
        self._sessions = sessions
        self._interval = interval
        self._rows: list[dict[str, object]] = []
        self._task: asyncio.Task[None] | None = None

    def record(self, request_id: str, principal: Principal, job: ImageJob, *, channel: str, status: str,
               images: int, cost: int, started: float, blobs: list[str] | None = None) -> None:
        """One finished request (or task); ``blobs``: the keys of its stored images."""
        metrics.job_done(job.surface, job.model, channel, status, images)
        logs.annotate(channel=channel, outcome=status, images=images, cost=cost)  # the request's log line
        self._rows.append({
            "request_id": request_id, "account_id": principal.account_id, "key_id": principal.key_id,
            "model": job.model, "channel": channel, "surface": job.surface, "status": status,
            "images": images, "cost": cost, "latency_ms": int((time.monotonic() - started) * 1000),
            "created_at": time.time(), "blobs": blobs or None,
        })

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            async with self._sessions.begin() as s:
                await s.execute(insert(UsageRecord), rows)
        except Exception:
            log.exception("could not write %d usage rows", len(rows))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


@dataclass(frozen=True)
class ModelTotals:
    requests: int
    succeeded: int
    images: int
    cost: int


@dataclass(frozen=True)
class UsageReport:
    """Totals of an account's usage log (or of every account's) and one page of recent rows."""

    requests: int
    succeeded: int
    images: int
    cost: int
    by_model: dict[str, ModelTotals]
    recent: list[UsageRecord]
    has_more: bool


async def usage_report(session: AsyncSession, account_id: str | None, *, limit: int,
                       before: int | None = None, since: float | None = None, model: str | None = None,
                       succeeded: bool | None = None) -> UsageReport:
    """``account_id`` None: every account (the admin view). ``recent`` is newest first, at most
    ``limit`` rows with ids below ``before`` (the cursor of the previous page). ``since``,
    ``model`` and ``succeeded`` narrow the totals and the rows alike."""
    scope = []
    if account_id is not None:
        scope.append(UsageRecord.account_id == account_id)
    if since is not None:
        scope.append(UsageRecord.created_at >= since)
    if model is not None:
        scope.append(UsageRecord.model == model)
    if succeeded is not None:
        scope.append((UsageRecord.status == "success") if succeeded else (UsageRecord.status != "success"))
    ok = case((UsageRecord.status == "success", 1), else_=0)
    rows = await session.execute(
        select(UsageRecord.model, func.count(), func.coalesce(func.sum(ok), 0),
               func.coalesce(func.sum(UsageRecord.images), 0), func.coalesce(func.sum(UsageRecord.cost), 0))
        .where(*scope).group_by(UsageRecord.model).order_by(UsageRecord.model))
    by_model = {m: ModelTotals(int(n), int(s), int(i), int(c)) for m, n, s, i, c in rows}
    page = select(UsageRecord).where(*scope).order_by(UsageRecord.id.desc()).limit(limit + 1)
    if before is not None:
        page = page.where(UsageRecord.id < before)
    recent = list((await session.execute(page)).scalars())
    return UsageReport(
        requests=sum(t.requests for t in by_model.values()),
        succeeded=sum(t.succeeded for t in by_model.values()),
        images=sum(t.images for t in by_model.values()),
        cost=sum(t.cost for t in by_model.values()),
        by_model=by_model, recent=recent[:limit], has_more=len(recent) > limit,
    )
