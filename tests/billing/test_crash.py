"""Holds left behind by a crash: the reaper releases a sync request's hold once that request
cannot still be running, never a hold its task may still charge, and never after a settle."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2 as httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.accounts import create_account
from imagegate.billing.ledger import Ledger, credit
from imagegate.db.migrate import upgrade
from imagegate.db.models import Task
from imagegate.db.session import make_engine, make_sessionmaker
from tests.billing.conftest import MICRO, books, priced_config
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import channel


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_between_hold_and_settle(emu: OpenAIEmulator, gateway_factory: StartGateway) -> None:
    config = priced_config(emu, billing={"hold_margin": 0.5, "reap_interval": 0.2})
    # deadline 1 s and timeout 1 s: the request could live 1 + 1 + 2·1 s, so its hold expires
    # 4.5 s after it was placed (with the 0.5 s margin).
    config["channels"] = [channel("c1", "openai", emu.url + "/v1", {"img-flat": "dall-e-2"},
                                  timeout=1, deadline=1)]
    gw = gateway_factory(config)
    account = gw.account(balance=10 * MICRO)
    key = gw.key(account=account)
    emu.latency = 30  # the upstream never answers before the kill

    def request() -> None:
        with contextlib.suppress(httpx.TransportError):  # the gateway dies under it
            httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "img-flat", "prompt": "a fox", "n": 3}, timeout=10)

    caller = threading.Thread(target=request, daemon=True)
    caller.start()
    wait_for(lambda: len(emu.calls) == 1, 5, "the request to reach the upstream")
    gw.kill()
    caller.join(5)

    b = books(gw, account)
    assert b.balance == 7 * MICRO and b.kinds() == ["topup", "hold"]
    (_ref, amount, settled, expires_at), = b.holds
    assert (amount, settled) == (3 * MICRO, False)

    emu.latency = 0
    gw.start()
    # Restarted well before the hold expires: the reaper's start-up pass must leave it alone.
    time.sleep(0.3)
    assert time.time() < expires_at - 1
    assert books(gw, account).holds[0][2] is False
    wait_for(lambda: books(gw, account).holds[0][2], expires_at - time.time() + 5, "the reaper")
    b = books(gw, account)
    assert b.balance == 10 * MICRO == b.ledger_sum
    assert b.kinds() == ["topup", "hold", "release"]  # released once, never charged


# -- which holds the reaper may take (the ledger against a real database) -------------------------

@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)  # alembic runs its own event loop
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    await engine.dispose()


def _task(task_id: str, account: str, status: str, hold_id: str | None) -> Task:
    now = time.time()
    return Task(id=task_id, account_id=account, key_id="key_x", action="generate", model="img-flat",
                platform="openai", request={}, status=status, progress=0, fail_reason="", state={},
                submit_time=now, deadline_at=now + 3600, attempts=0, run_after=now + 3600,
                lease_owner="elsewhere", lease_until=now + 3600, hold_id=hold_id)


async def test_reaper_leaves_task_holds_to_their_task(sessions: async_sessionmaker[AsyncSession]) -> None:
    ledger = Ledger(sessions)
    async with sessions.begin() as s:
        account = (await create_account(s, "a")).id
        await s.flush()
        await credit(s, account, 100 * MICRO)
    holds = {name: await ledger.hold(account, MICRO, ref, ttl=-1) for name, ref in [
        ("sync", "req1"), ("queued", "a" * 32), ("running", "b" * 32), ("succeeded", "c" * 32),
        ("failed", "d" * 32), ("no-task-row", "e" * 32)]}
    live = await ledger.hold(account, MICRO, "req2", ttl=3600)
    async with sessions.begin() as s:
        s.add_all([_task("a" * 32, account, "QUEUED", holds["queued"]),
                   _task("b" * 32, account, "IN_PROGRESS", holds["running"]),
                   _task("c" * 32, account, "SUCCESS", holds["succeeded"]),
                   _task("d" * 32, account, "FAILURE", holds["failed"])])

    assert sorted(await ledger.expired_holds(time.time())) == sorted(
        [holds["sync"], holds["failed"], holds["no-task-row"]])
    assert await ledger.release_expired() == 3
    assert await ledger.release_expired() == 0  # idempotent
    # The running task finishes later and settles its own hold: charged once, never released too.
    assert await ledger.settle(holds["running"], MICRO // 4) == MICRO // 4
    assert await ledger.settle(holds["running"], MICRO // 4) == 0
    # A request that outlived its hold after the reaper released it is not charged twice either.
    assert await ledger.settle(holds["sync"], MICRO) == 0

    st = await ledger.statement(account)
    assert st is not None and st.consistent
    assert (st.open_holds, st.held) == (3, 3 * MICRO)  # queued, succeeded (left to its task), live
    assert st.balance == 100 * MICRO - 3 * MICRO - MICRO // 4
    assert live not in await ledger.expired_holds(time.time())
