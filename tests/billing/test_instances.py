"""Holds of a crashed process come back within a heartbeat's staleness, not the request's
longest possible run; a live process's holds are never touched. On SQLite (one process killed
and restarted) and on PostgreSQL (two gateway processes on one database, one killed)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx2 as httpx

from tests.billing.conftest import MICRO, books, priced_config
from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel, postgres_database

# Beats every 0.2 s, dead after 1 s without one; the reaper looks every 0.2 s.
FAST_HEARTBEAT = {"heartbeat_interval": 0.2, "instance_stale_after": 1.0, "reap_interval": 0.2}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took ``predicate`` to hold."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def fire(gw: GatewayProcess, key: str, prompt: str) -> threading.Thread:
    """A sync request in a thread; the gateway may die under it."""
    def run() -> None:
        with contextlib.suppress(httpx.TransportError):
            httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "img-flat", "prompt": prompt}, timeout=60)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def config(emu: OpenAIEmulator, **extra: Any) -> dict[str, Any]:
    cfg = priced_config(emu, billing=FAST_HEARTBEAT, **extra)
    # A long deadline: the old expiry-based reaper would hold the money for ~20 minutes.
    cfg["channels"] = [channel("c1", "openai", emu.url + "/v1", {"img-flat": "dall-e-2"}, timeout=30,
                               deadline=600)]
    return cfg


def test_sqlite_crash_releases_holds_within_seconds(emu: OpenAIEmulator, gateway_factory: StartGateway) -> None:
    gw = gateway_factory(config(emu))
    account = gw.account(balance=3 * MICRO)
    key = gw.key(account=account)
    emu.latency = 60
    callers = [fire(gw, key, f"fox {i}") for i in range(3)]
    wait_for(lambda: len(emu.calls) == 3, 10, "the requests to reach the upstream")
    b = books(gw, account)
    assert b.balance == 0 and [h[2] for h in b.holds] == [False] * 3  # all of it held
    expires_at = min(h[3] for h in b.holds)

    gw.kill()
    killed = time.time()
    for c in callers:
        c.join(5)
    emu.latency = 0
    gw.start()
    wait_for(lambda: all(h[2] for h in books(gw, account).holds), 15, "the dead process's holds to be released")
    assert time.time() - killed < 15 and time.time() < expires_at - 500  # not the 10-minute expiry
    b = books(gw, account)
    assert b.balance == 3 * MICRO == b.ledger_sum
    assert b.kinds() == ["topup", *["hold"] * 3, *["release"] * 3]
    # The money is usable again at once.
    r = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "img-flat", "prompt": "a fox"}, timeout=30)
    assert r.status_code == 200, r.text


def _pg_holds(dsn: str, account: str) -> list[tuple[str, bool, int]]:
    """(instance pid, settled, amount) of the account's holds."""
    async def read() -> list[tuple[str, bool, int]]:
        conn = await asyncpg.connect(dsn.replace("postgresql+asyncpg", "postgresql"))
        try:
            rows = await conn.fetch(
                "SELECT h.ref, h.settled, h.amount, h.instance_id FROM holds h WHERE h.account_id = $1", account)
            return [(r["instance_id"], r["settled"], r["amount"]) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(read())


def _pg_balance(dsn: str, account: str) -> tuple[int, int]:
    async def read() -> tuple[int, int]:
        conn = await asyncpg.connect(dsn.replace("postgresql+asyncpg", "postgresql"))
        try:
            balance = await conn.fetchval("SELECT balance FROM accounts WHERE id = $1", account)
            ledger = await conn.fetchval("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE account_id = $1",
                                         account)
            return int(balance), int(ledger)
        finally:
            await conn.close()

    return asyncio.run(read())


def test_postgres_only_the_dead_processes_holds_come_back(emu: OpenAIEmulator,
                                                         gateway_factory: StartGateway) -> None:
    with postgres_database() as url:
        dead = gateway_factory(config(emu, database_url=url), name="dead")
        alive = gateway_factory(config(emu, database_url=url), name="alive")
        try:
            account = dead.account(balance=4 * MICRO)
            key = dead.key(account=account)
            emu.latency = 6  # the live process's requests finish after the dead one is reaped
            threads = [fire(dead, key, "doomed 1"), fire(dead, key, "doomed 2"), fire(alive, key, "lives")]
            wait_for(lambda: len(emu.calls) == 3, 10, "the requests to reach the upstream")
            holds = _pg_holds(url, account)
            assert len({inst for inst, _, _ in holds}) == 2 and not any(s for _, s, _ in holds)
            (alive_instance,) = {inst for inst, _, _ in holds if sum(i == inst for i, _, _ in holds) == 1}

            dead.kill()
            wait_for(lambda: sum(s for _, s, _ in _pg_holds(url, account)) == 2, 5,
                     "the dead process's two holds to be released by the live one")
            still = [(inst, s) for inst, s, _ in _pg_holds(url, account) if not s]
            assert still == [(alive_instance, False)]  # the live request's hold is untouched
            threads[2].join(15)
            holds = _pg_holds(url, account)
            assert all(s for _, s, _ in holds)
            balance, ledger = _pg_balance(url, account)
            assert balance == ledger == 3 * MICRO  # one image delivered and charged, two released
        finally:
            alive.stop()
            dead.stop()
