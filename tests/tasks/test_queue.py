"""The tasks table as a queue: claim, lease, renew, release, finish, reap, retention, deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.api.tasks import task_object
from imagegate.config import Settings
from imagegate.db.migrate import upgrade
from imagegate.db.models import Task, WebhookDelivery
from imagegate.db.session import make_engine, make_sessionmaker
from imagegate.db.status import FAILURE, IN_PROGRESS, QUEUED, SUCCESS
from imagegate.state import AppState, build_state
from imagegate.tasks.queue import TaskQueue
from imagegate.tasks.webhooks import WebhookSender
from imagegate.tasks.worker import TaskRunner, blobs_of
from tests.conftest import StartGateway
from tests.emulators.bfl import BflEmulator
from tests.harness import GatewayProcess, channel
from tests.tasks.conftest import submit, wait_task

LEASE = 30.0


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh database on the machine's PostgreSQL (skipped when none answers)."""
    try:
        admin = await asyncpg.connect(PG_ADMIN, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({exc})")
    name = f"imagegate_q_{uuid.uuid4().hex[:12]}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The queue on both engines: the claim is the one place their SQL differs."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'q.db'}"
        else:
            url = await stack.enter_async_context(postgres_database())
        await asyncio.to_thread(upgrade, url)
        engine = make_engine(url)
        yield make_sessionmaker(engine)
        await engine.dispose()


async def add(sessions: async_sessionmaker[AsyncSession], n: int = 1, *, run_after: float | None = None,
              status: str = QUEUED, **kw: Any) -> list[str]:
    now = time.time()
    ids = []
    async with sessions.begin() as s:
        for i in range(n):
            task_id = uuid.uuid4().hex
            ids.append(task_id)
            s.add(Task(id=task_id, account_id="acct", key_id="key", action="generate", model="m",
                       platform="p", request={"model": "m", "prompt": f"p{i}"}, status=status, progress=0,
                       fail_reason="", state={}, submit_time=now, deadline_at=now + 600, attempts=0,
                       run_after=now if run_after is None else run_after, **kw))
    return ids


async def row(sessions: async_sessionmaker[AsyncSession], task_id: str) -> Task:
    async with sessions() as s:
        task = await s.get(Task, task_id)
    assert task is not None
    return task


async def test_claim_leases_due_tasks_once_and_marks_them_started(sessions: async_sessionmaker[AsyncSession]) -> None:
    q = TaskQueue(sessions)
    due = await add(sessions, 3)
    await add(sessions, 1, run_after=time.time() + 60)  # not yet due
    await add(sessions, 1, status=SUCCESS)  # finished
    claimed = await q.claim("a", 10, LEASE)
    assert sorted(t.id for t in claimed) == sorted(due)
    assert all(t.status == IN_PROGRESS and t.lease_owner == "a" and t.attempts == 1 for t in claimed)
    assert all(t.start_time is not None and t.lease_until and t.lease_until > time.time() + LEASE - 5
               for t in claimed)
    assert await q.claim("b", 10, LEASE) == []  # leased tasks are nobody else's


async def test_start_time_is_the_first_claim(sessions: async_sessionmaker[AsyncSession]) -> None:
    q = TaskQueue(sessions)
    (task_id,) = await add(sessions)
    (first,) = await q.claim("a", 1, LEASE, now=1000.0 + time.time())
    assert await q.release(task_id, "a", run_after=0, state={"x": 1}, progress=25)
    (second,) = await q.claim("a", 1, LEASE, now=2000.0 + time.time())
    assert second.start_time == first.start_time and second.attempts == 2
    assert second.state == {"x": 1} and second.progress == 25


async def test_concurrent_claimers_never_share_a_task(sessions: async_sessionmaker[AsyncSession]) -> None:
    q = TaskQueue(sessions)
    ids = await add(sessions, 40)
    batches = await asyncio.gather(*(q.claim(f"w{i}", 3, LEASE) for i in range(20)))
    got = [t.id for b in batches for t in b]
    assert len(got) == len(set(got)) == 40 and set(got) == set(ids)


async def test_renew_and_release_belong_to_the_lease_owner(sessions: async_sessionmaker[AsyncSession]) -> None:
    q = TaskQueue(sessions)
    (task_id,) = await add(sessions)
    await q.claim("a", 1, LEASE)
    assert await q.renew(task_id, "a", LEASE)
    assert not await q.renew(task_id, "b", LEASE)
    assert not await q.release(task_id, "b", run_after=0, state={}, progress=50)
    later = time.time() + 5
    assert await q.release(task_id, "a", run_after=later, state={"calls": []}, progress=30, platform="bfl")
    task = await row(sessions, task_id)
    assert task.lease_owner is None and task.run_after == later and task.progress == 30 and task.platform == "bfl"
    assert await q.claim("b", 1, LEASE) == []  # not due before run_after
    assert [t.id for t in await q.claim("b", 1, LEASE, now=later + 1)] == [task_id]


async def test_reaper_returns_only_expired_leases(sessions: async_sessionmaker[AsyncSession]) -> None:
    q = TaskQueue(sessions)
    dead, alive = await add(sessions, 2)
    await q.claim("dead", 1, 0.01)
    await q.claim("alive", 1, LEASE)
    await asyncio.sleep(0.05)
    assert await q.reap() == 1
    assert (await row(sessions, dead)).lease_owner is None
    assert (await row(sessions, alive)).lease_owner == "alive"
    assert not await q.renew(dead, "dead", LEASE)  # the dead owner cannot take it back
    (again,) = await q.claim("new", 5, LEASE)
    assert again.id == dead and again.attempts == 2 and again.status == IN_PROGRESS


async def test_finish_happens_exactly_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    q = TaskQueue(sessions)
    (task_id,) = await add(sessions)
    await q.claim("a", 1, LEASE)
    async with sessions.begin() as s:
        assert not await TaskQueue.finish(s, task_id, "b", status=SUCCESS, result={}, fail_reason="", state={})
    async with sessions.begin() as s:
        assert await TaskQueue.finish(s, task_id, "a", status=FAILURE, result=None, fail_reason="no", state={})
    async with sessions.begin() as s:
        assert not await TaskQueue.finish(s, task_id, "a", status=SUCCESS, result={}, fail_reason="", state={})
    task = await row(sessions, task_id)
    assert task.status == FAILURE and task.fail_reason == "no" and task.finish_time and task.lease_owner is None
    assert await q.claim("a", 1, LEASE) == []
    assert await q.reap() == 0


async def test_recent_lists_queued_under_in_progress(sessions: async_sessionmaker[AsyncSession]) -> None:
    q = TaskQueue(sessions)
    queued = await add(sessions, 2)
    done = await add(sessions, 1, status=SUCCESS)
    assert {t.id for t in await q.recent(status=IN_PROGRESS)} == set(queued)
    assert {t.id for t in await q.recent(status=SUCCESS)} == set(done)


# ---- retention, with a real AppState -------------------------------------------------------


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[AppState]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}",
                        storage_url=f"file://{tmp_path / 'blobs'}", local_model=False, channels=[])
    await asyncio.to_thread(upgrade, settings.database_url)
    st = await build_state(settings)
    yield st
    await st.aclose()


async def test_retention_deletes_old_tasks_their_blobs_and_deliveries(state: AppState) -> None:
    store = state.store
    upload = await store.put(b"in", content_type="image/png", prefix="task-in")
    output = await store.put(b"out", content_type="image/png")
    keep = await store.put(b"keep", content_type="image/png")
    old = time.time() - 10 * 86400
    result = {"delivered": [{"blob": output, "mime": "image/png"}], "created": int(old)}
    request = {"model": "m", "prompt": "p", "images": [{"blob": upload, "mime": "image/png"}]}
    (old_id,) = await add(state.sessions, status=SUCCESS, finish_time=old, result=result)
    async with state.sessions.begin() as s:
        (await s.get(Task, old_id)).request = request  # type: ignore[union-attr]
        s.add(WebhookDelivery(id="msg_x", task_id=old_id, key_id="key", url="http://x", payload="",
                              next_attempt_at=old, created_at=old))
    (new_id,) = await add(state.sessions, status=SUCCESS, finish_time=time.time(),
                          result={"delivered": [{"blob": keep}], "created": 1})
    (running,) = await add(state.sessions)  # unfinished tasks are never expired

    assert sorted(blobs_of(await row(state.sessions, old_id))) == sorted([upload, output])
    webhooks = WebhookSender(state.settings.tasks, state.sessions, state.safe, render=partial(task_object, state))
    runner = TaskRunner(state.settings.tasks, state.sessions, state.gateway, state.tasks, webhooks)
    removed = await runner.cleanup(time.time() - 7 * 86400)
    assert removed == 1
    async with state.sessions() as s:
        assert set((await s.execute(select(Task.id))).scalars()) == {new_id, running}
        assert list((await s.execute(select(WebhookDelivery.id))).scalars()) == []
    for gone in (upload, output):
        with pytest.raises(KeyError):
            await store.get(gone)
    assert await store.get(keep) == b"keep"


# ---- deadline, end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bfl() -> Iterator[BflEmulator]:
    with BflEmulator() as e:
        yield e


def test_a_task_past_its_deadline_fails_cleanly(bfl: BflEmulator, gateway_factory: StartGateway) -> None:
    gw: GatewayProcess = gateway_factory({
        "channels": [channel("flux", "bfl", bfl.url, {"flux": "flux-pro-1.1"})], "local_model": False,
        "prices": {"flux": 0.05},
        "tasks": {"deadline": 1.0, "poll_seconds": 0.2},
    })
    bfl.pending_polls = 10_000  # never ready
    account = gw.account(balance=1_000_000)
    key = gw.key(account=account)
    task_id = submit(gw, key, {"model": "flux", "prompt": "forever"})
    task = wait_task(gw, key, task_id, timeout=15)
    assert task["status"] == "FAILURE" and "deadline" in task["fail_reason"], task
    assert task["finish_time"] - task["submit_time"] <= 3
    assert len(bfl.submits()) == 1
    import sqlite3

    with sqlite3.connect(gw.root / "imagegate.db") as db:
        assert db.execute("SELECT balance FROM accounts WHERE id = ?", (account,)).fetchone() == (1_000_000,)
