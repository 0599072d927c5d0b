"""The ``tasks`` table is the queue.

A task is *due* when it is not finished, its ``run_after`` has passed and nobody holds its
lease. ``claim`` takes up to ``k`` due tasks for one owner in a single statement and leases them
for ``lease`` seconds; the owner runs one step of each, then ``release``s it with the next
``run_after`` (or finishes it). An owner that dies keeps its leases until they expire; the
``reap``er then hands those tasks back to the queue, and the next claim resumes them from the
state the last step persisted. No transaction is ever open across an upstream call: every
function here is one short transaction.

The claim is the only engine-specific SQL in imagegate (see ``_pick``): PostgreSQL locks the
picked rows with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers skip each other's rows;
SQLite serialises writers (``BEGIN IMMEDIATE``), so a plain sub-select is already exclusive.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db.models import Task, WebhookDelivery
from imagegate.db.status import IN_PROGRESS, SUCCESS, TASK_ACTIVE, TASK_TERMINAL

T = TypeVar("T")


def _due(now: float) -> Any:
    return and_(Task.status.in_(TASK_ACTIVE), Task.run_after <= now, Task.lease_owner.is_(None))


def skip_locked(pick: Select[T], session: AsyncSession) -> Select[T]:
    """The engine's idiom for "rows nobody else is claiming right now". PostgreSQL: lock the
    picked rows and skip rows another transaction holds. SQLite: nothing to add, because every
    write transaction there is ``BEGIN IMMEDIATE`` and so already exclusive."""
    if session.get_bind().dialect.name == "postgresql":
        return pick.with_for_update(skip_locked=True)
    return pick


def _pick(session: AsyncSession, now: float, k: int) -> Select[str]:
    """The ids of up to ``k`` due tasks, oldest ``run_after`` first."""
    return skip_locked(select(Task.id).where(_due(now)).order_by(Task.run_after).limit(k), session)


class TaskQueue:
    """Claim, renew, release, finish and expire tasks. Every method is one short transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def claim(self, owner: str, k: int, lease: float, now: float | None = None) -> list[Task]:
        """Lease up to ``k`` due tasks to ``owner``; a first claim marks the task started."""
        if k <= 0:
            return []
        now = time.time() if now is None else now
        async with self.sessions.begin() as s:
            stmt = (
                update(Task)
                .where(Task.id.in_(_pick(s, now, k).scalar_subquery()))
                .values(lease_owner=owner, lease_until=now + lease, attempts=Task.attempts + 1,
                        status=IN_PROGRESS, start_time=func.coalesce(Task.start_time, now))
                .returning(Task)
                .execution_options(synchronize_session=False)
            )
            return list((await s.execute(stmt)).scalars())

    async def renew(self, task_id: str, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease; False when the lease was lost (reaped, or the task ended)."""
        async with self.sessions.begin() as s:
            done = await s.execute(
                update(Task).where(Task.id == task_id, Task.lease_owner == owner, Task.status.in_(TASK_ACTIVE))
                .values(lease_until=time.time() + lease)
            )
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    async def release(self, task_id: str, owner: str, *, run_after: float, state: dict[str, Any],
                      progress: int, platform: str | None = None) -> bool:
        """Persist a step's state and give the task back to the queue until ``run_after``.
        False (and nothing written) when ``owner`` no longer holds the lease."""
        values: dict[str, Any] = {"state": state, "run_after": run_after, "lease_owner": None,
                                  "lease_until": None, "progress": progress}
        if platform:
            values["platform"] = platform
        async with self.sessions.begin() as s:
            done = await s.execute(
                update(Task).where(Task.id == task_id, Task.lease_owner == owner, Task.status.in_(TASK_ACTIVE))
                .values(**values)
            )
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    async def save_state(self, task_id: str, owner: str, state: dict[str, Any]) -> bool:
        """Record a running step's state now (its latest partial image); the step keeps its lease."""
        async with self.sessions.begin() as s:
            done = await s.execute(
                update(Task).where(Task.id == task_id, Task.lease_owner == owner, Task.status.in_(TASK_ACTIVE))
                .values(state=state)
            )
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    @staticmethod
    async def finish(session: AsyncSession, task_id: str, owner: str, *, status: str,
                     result: dict[str, Any] | None, fail_reason: str, state: dict[str, Any],
                     platform: str | None = None, now: float | None = None) -> bool:
        """Mark the task terminal inside ``session``'s transaction (the caller settles the hold
        and enqueues the webhook in the same one). Exactly once: False when ``owner`` lost the
        lease or the task is already finished."""
        assert status in TASK_TERMINAL
        now = time.time() if now is None else now
        values: dict[str, Any] = {"status": status, "result": result, "fail_reason": fail_reason,
                                  "state": state, "progress": 100 if status == SUCCESS else Task.progress,
                                  "finish_time": now, "lease_owner": None, "lease_until": None}
        if platform:
            values["platform"] = platform
        done = await session.execute(
            update(Task).where(Task.id == task_id, Task.lease_owner == owner, Task.status.in_(TASK_ACTIVE))
            .values(**values)
        )
        return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    async def reap(self, now: float | None = None) -> int:
        """Return to the queue every unfinished task whose lease expired (its owner died or
        stalled). Returns how many."""
        now = time.time() if now is None else now
        async with self.sessions.begin() as s:
            done = await s.execute(
                update(Task).where(Task.status.in_(TASK_ACTIVE), Task.lease_owner.is_not(None),
                                   Task.lease_until < now)
                .values(lease_owner=None, lease_until=None)
            )
            return int(done.rowcount)  # type: ignore[attr-defined]

    async def release_all(self, owner: str) -> int:
        """Give back every lease ``owner`` holds (graceful shutdown), due at once."""
        async with self.sessions.begin() as s:
            done = await s.execute(
                update(Task).where(Task.lease_owner == owner, Task.status.in_(TASK_ACTIVE))
                .values(lease_owner=None, lease_until=None)
            )
            return int(done.rowcount)  # type: ignore[attr-defined]

    async def next_due(self) -> float | None:
        """The earliest ``run_after`` of an unleased unfinished task (None: nothing waiting)."""
        async with self.sessions() as s:
            return await s.scalar(select(func.min(Task.run_after))
                                  .where(Task.status.in_(TASK_ACTIVE), Task.lease_owner.is_(None)))

    async def expired(self, before: float, limit: int = 200) -> list[Task]:
        """Finished tasks older than ``before`` (retention), oldest first."""
        async with self.sessions() as s:
            rows = await s.execute(select(Task).where(Task.status.in_(TASK_TERMINAL), Task.finish_time < before)
                                   .order_by(Task.finish_time).limit(limit))
            return list(rows.scalars())

    async def delete(self, task_ids: Sequence[str]) -> None:
        """Drop tasks and their webhook deliveries (after their blobs are gone)."""
        if not task_ids:
            return
        async with self.sessions.begin() as s:
            await s.execute(delete(WebhookDelivery).where(WebhookDelivery.task_id.in_(task_ids)))
            await s.execute(delete(Task).where(Task.id.in_(task_ids)))

    async def get(self, task_id: str, account_id: str | None = None) -> Task | None:
        async with self.sessions() as s:
            stmt = select(Task).where(Task.id == task_id)
            if account_id is not None:
                stmt = stmt.where(Task.account_id == account_id)
            return (await s.execute(stmt)).scalar_one_or_none()

    async def recent(self, *, status: str | None = None, limit: int = 50) -> list[Task]:
        async with self.sessions() as s:
            stmt = select(Task).order_by(Task.submit_time.desc()).limit(limit)
            if status == IN_PROGRESS:  # the public word covers queued tasks too
                stmt = stmt.where(Task.status.in_(TASK_ACTIVE))
            elif status is not None:
                stmt = stmt.where(Task.status == status)
            return list((await s.execute(stmt)).scalars())


def public_status(status: str) -> str:
    """What callers see: queued and running are both ``IN_PROGRESS``."""
    return IN_PROGRESS if status in TASK_ACTIVE else status


def overdue(task: Task, now: float) -> bool:
    return task.deadline_at <= now

