"""Replicas side by side: three ``imagegate serve`` processes on different ports sharing one
PostgreSQL database, one Redis and one S3 bucket (moto's server, ``tests/storage/conftest.py``),
in front of the BFL emulator — behaving as one gateway while one of them is SIGKILLed mid-run,
and serving on while Redis is down.

Skipped where no PostgreSQL answers on 127.0.0.1:5432 or no Redis on 127.0.0.1:6379 (CI runs
both). Counts are sized for a shared 2-core machine (``TASKS``, ``SYNC``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx2 as httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.emulators.bfl import BflEmulator
from tests.harness import GatewayProcess, channel, free_port, postgres_database
from tests.storage.conftest import BUCKET, S3Server, s3_server  # noqa: F401  (the fixture, used by name)
from tests.tasks.conftest import WebhookReceiver

TASKS = 200
SYNC = 200
PRICE = 10_000  # micro-units per image
BALANCE = 100_000_000
REDIS = "redis://127.0.0.1:6379"
MODEL = "flux"


def redis_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


def subscribers(port: int = 6379) -> int:
    """How many connections listen for task hints on this Redis (``PUBSUB NUMSUB``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PUBSUB NUMSUB imagegate:tasks\r\n")
        reply = s.recv(256).split(b"\r\n")
    return int(reply[3][1:])


@pytest.fixture(scope="module")
def bfl() -> Iterator[BflEmulator]:
    with BflEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


def replica_config(db: str, bfl: BflEmulator, redis_url: str, *, prefix: str, **tasks: Any) -> dict[str, Any]:
    return {
        "database_url": db,
        "storage_url": f"s3://{BUCKET}/{prefix}",
        "redis_url": redis_url,
        "local_model": False,
        "channels": [channel("flux", "bfl", bfl.url, {MODEL: "flux-pro-1.1"}, poll_interval=0.2)],
        "prices": {MODEL: PRICE / 1_000_000},
        "outbound_allowlist": ["127.0.0.1"],
        "billing": {"heartbeat_interval": 1, "reap_interval": 1, "instance_stale_after": 4},
        "tasks": {"workers": 16, "lease_seconds": 3.0, "poll_seconds": 1.0, "webhook_backoff": 0.2, **tasks},
    }


def start_replicas(root: Path, configs: list[dict[str, Any]], env: dict[str, str]) -> list[GatewayProcess]:
    """Start every replica at the same moment on the same fresh database (the migrations race)."""
    gws = []
    for i, cfg in enumerate(configs):
        (root / f"replica{i}").mkdir()
        gws.append(GatewayProcess(root=root / f"replica{i}", config=cfg, env=env))
    with ThreadPoolExecutor(len(gws)) as pool:
        list(pool.map(lambda gw: gw.start(), gws))
    return gws


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def pg(db: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db.replace("postgresql+asyncpg", "postgresql"))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def submit_all(gws: list[GatewayProcess], key: str, n: int, hook: str) -> list[str]:
    sem = asyncio.Semaphore(16)

    async def one(client: httpx.AsyncClient, i: int) -> str:
        async with sem:
            r = await client.post(gws[i % len(gws)].url + "/v1/images/generations",
                                  params={"async": "true", "webhook": hook}, headers=auth(key),
                                  json={"model": MODEL, "prompt": f"task {i}"})
        assert r.status_code == 200, r.text
        return str(r.json()["task_id"])

    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(*(one(client, i) for i in range(n)))


async def sync_requests(gws: list[GatewayProcess], key: str, n: int, tag: str) -> list[int]:
    """``n`` sync generations spread over ``gws``; the HTTP status of each."""
    sem = asyncio.Semaphore(12)
    clients = [AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=60) for gw in gws]

    async def one(i: int) -> int:
        async with sem:
            r = await clients[i % len(clients)].images.generate(model=MODEL, prompt=f"{tag} {i}",
                                                                response_format="b64_json")
        assert r.data and r.data[0].b64_json
        return 200

    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        for c in clients:
            await c.close()


def task_rows(db: str) -> list[dict[str, Any]]:
    rows = asyncio.run(pg(db, "SELECT status, state, request, lease_owner FROM tasks"))
    out = []
    for r in rows:
        state = json.loads(r["state"]) if isinstance(r["state"], str) else (r["state"] or {})
        out.append({"status": r["status"], "owner": r["lease_owner"] or "",
                    "prompt": json.loads(r["request"])["prompt"] if isinstance(r["request"], str)
                    else r["request"]["prompt"],
                    "handles": [c["handle"] for c in state.get("calls", []) if c.get("handle")]})
    return out


def wait_for_leases(db: str, gw: GatewayProcess) -> list[dict[str, Any]]:
    """The tasks table once ``gw`` holds a task whose upstream id it has recorded."""
    mark = f":{gw.proc.pid if gw.proc else 0}:"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = task_rows(db)
        if any(r["status"] == "IN_PROGRESS" and mark in r["owner"] and r["handles"] for r in rows):
            return rows
        time.sleep(0.02)
    raise AssertionError("the replica never held a polling task")


def wait_all(gws: list[GatewayProcess], key: str, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=30) as client:
        while len(done) < len(ids) and time.monotonic() < deadline:
            for i, task_id in enumerate(ids):
                if task_id in done:
                    continue
                data = client.get(f"{gws[i % len(gws)].url}/v1/images/tasks/{task_id}", headers=auth(key)).json()
                if data["data"]["status"] in ("SUCCESS", "FAILURE"):
                    done[task_id] = data["data"]
            time.sleep(0.2)
    missing = set(ids) - set(done)
    assert not missing, f"{len(missing)} tasks unfinished:\n{gws[0].logs()[-3000:]}"
    return done


def test_three_replicas_behave_as_one_gateway(tmp_path: Path, s3_server: S3Server,  # noqa: F811
                                              bfl: BflEmulator, receiver: WebhookReceiver) -> None:
    if not redis_answers(6379):
        pytest.skip("no Redis at 127.0.0.1:6379")
    bfl.reset()
    receiver.reset()
    bfl.pending_polls = 4  # tasks stay a while in flight, so C dies holding some
    with postgres_database() as db:
        prefix = f"replicas-{uuid.uuid4().hex[:8]}"
        gws = start_replicas(tmp_path, [replica_config(db, bfl, REDIS, prefix=prefix) for _ in range(3)],
                             s3_server.env())
        try:
            a, b, c = gws
            account = a.account(balance=BALANCE)
            key = a.key(account=account)

            # A URL handed out by replica A is served by replica B (one bucket, one signing secret).
            with OpenAI(base_url=a.url + "/v1", api_key=key, max_retries=0) as client:
                url = client.images.generate(model=MODEL, prompt="shared", response_format="url").data[0].url
            assert url and url.startswith(a.url + "/files/")
            via_b = httpx.get(url.replace(a.url, b.url), timeout=30)
            assert via_b.status_code == 200 and via_b.content == httpx.get(url, timeout=30).content

            # Sync requests on all three, tasks spread over all three; then C dies while it
            # polls tasks whose upstream ids it recorded; the rest of the sync requests go to A and B.
            statuses = asyncio.run(sync_requests(gws, key, SYNC // 4, "before"))
            ids = asyncio.run(submit_all(gws, key, TASKS, receiver.hook_url))
            before = wait_for_leases(db, c)
            c.kill()
            polling = {r["prompt"] for r in before if r["status"] == "IN_PROGRESS" and r["handles"]}
            assert polling
            statuses += asyncio.run(sync_requests([a, b], key, SYNC - SYNC // 4, "after"))
            assert statuses == [200] * SYNC

            done = wait_all([a, b], key, ids, timeout=90)
            assert all(t["status"] == "SUCCESS" for t in done.values()), [t for t in done.values()
                                                                           if t["status"] != "SUCCESS"][:3]

            # Upstream: every task submitted; one whose upstream id was recorded, exactly once.
            submits = Counter(call.json["prompt"] for call in bfl.submits())
            prompts = {f"task {i}" for i in range(TASKS)}
            assert prompts <= set(submits)
            assert all(submits[p] == 1 for p in polling), {p: submits[p] for p in polling if submits[p] != 1}
            # A task is resubmitted only if C died between the upstream's answer and the commit
            # of its id: at most the handful C was submitting at that instant.
            assert sum(submits[p] - 1 for p in prompts) <= 16

            # Webhooks: one message per task (a retry keeps its webhook-id).
            receiver.wait_deliveries(TASKS, timeout=30)
            per_task: dict[str, set[str]] = {}
            for d in receiver.deliveries():
                per_task.setdefault(d.json["task_id"], set()).add(d.headers["webhook-id"])
            assert set(per_task) == set(ids) and all(len(v) == 1 for v in per_task.values())
            outbox = asyncio.run(pg(db, "SELECT task_id, count(*) AS n FROM webhook_deliveries GROUP BY task_id"))
            assert {r["task_id"]: r["n"] for r in outbox} == dict.fromkeys(ids, 1)

            # Money: balance equals its ledger; charged = images delivered × price; no open hold.
            delivered = 1 + SYNC + TASKS
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                (row,) = asyncio.run(pg(db, "SELECT a.balance, (SELECT sum(amount) FROM ledger l "
                                            "WHERE l.account_id = a.id) AS ledger, (SELECT count(*) FROM holds h "
                                            "WHERE h.account_id = a.id AND NOT h.settled) AS open "
                                            "FROM accounts a WHERE a.id = $1", account))
                if row["open"] == 0:
                    break
                time.sleep(0.5)
            assert row["open"] == 0
            assert row["balance"] == row["ledger"] == BALANCE - delivered * PRICE
        finally:
            for gw in gws:
                gw.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("no redis-server on PATH")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not redis_answers(port):
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}", proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def test_redis_stopped_mid_run(tmp_path: Path, s3_server: S3Server, bfl: BflEmulator,  # noqa: F811
                               private_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    redis_url, redis = private_redis
    bfl.reset()
    with postgres_database() as db:
        prefix = f"redis-down-{uuid.uuid4().hex[:8]}"
        gws = start_replicas(tmp_path, [replica_config(db, bfl, redis_url, prefix=prefix, poll_seconds=0.5)
                                        for _ in range(2)], s3_server.env())
        try:
            a, b = gws
            key = a.key(rpm=100_000)  # a limited key: every work request consults the shared count
            assert httpx.get(a.url + "/healthz").json()["redis"] == "ok"
            first = asyncio.run(submit_all(gws, key, 10, "http://127.0.0.1:9/unused"))
            redis.kill()
            redis.wait(5)
            assert asyncio.run(sync_requests(gws, key, 10, "no redis")) == [200] * 10
            later = asyncio.run(submit_all(gws, key, 10, "http://127.0.0.1:9/unused"))
            done = wait_all(gws, key, first + later, timeout=30)
            assert all(t["status"] == "SUCCESS" for t in done.values())
            health = httpx.get(b.url + "/healthz")
            assert health.status_code == 200 and health.json()["status"] == "degraded", health.text
            assert "Redis unreachable" in a.logs() + b.logs()
        finally:
            for gw in gws:
                gw.stop()


def test_a_task_queued_on_one_replica_wakes_another_at_once(tmp_path: Path, s3_server: S3Server,  # noqa: F811
                                                            bfl: BflEmulator) -> None:
    """A accepts only (no workers); B polls the database once a minute: the task still starts at
    once, because A's submission reaches B through Redis."""
    if not redis_answers(6379):
        pytest.skip("no Redis at 127.0.0.1:6379")
    bfl.reset()
    with postgres_database() as db:
        prefix = f"wake-{uuid.uuid4().hex[:8]}"
        gws = start_replicas(tmp_path, [replica_config(db, bfl, REDIS, prefix=prefix, workers=0),
                                        replica_config(db, bfl, REDIS, prefix=prefix, poll_seconds=60)],
                             s3_server.env())
        try:
            a, b = gws
            key = a.key()
            deadline = time.monotonic() + 10
            while subscribers() < 2:  # both listen (other tests' gateways may listen too)
                assert time.monotonic() < deadline, "the replicas never subscribed to task hints"
                time.sleep(0.05)
            time.sleep(1.5)  # past B's first poll at start-up
            started = time.monotonic()
            (task_id,) = asyncio.run(submit_all([a], key, 1, "http://127.0.0.1:9/unused"))
            assert wait_all([a], key, [task_id], timeout=20)[task_id]["status"] == "SUCCESS", b.logs()[-3000:]
            assert time.monotonic() - started < 10
        finally:
            for gw in gws:
                gw.stop()


def test_a_key_revoked_on_one_replica_is_refused_by_another_at_once(tmp_path: Path, s3_server: S3Server,  # noqa: F811
                                                                    bfl: BflEmulator) -> None:
    """The change-counter poll is set to 30 s: B forgets the key within a second only because A's
    commit of the revocation reaches B's watcher through Redis."""
    if not redis_answers(6379):
        pytest.skip("no Redis at 127.0.0.1:6379")
    with postgres_database() as db:
        prefix = f"revoke-{uuid.uuid4().hex[:8]}"
        configs = [{**replica_config(db, bfl, REDIS, prefix=prefix), "cache_check_interval": 30,
                    "admin_token": "admin-secret"} for _ in range(2)]
        gws = start_replicas(tmp_path, configs, s3_server.env())
        try:
            a, b = gws
            admin = {"Authorization": "Bearer admin-secret"}
            made = httpx.post(a.url + "/admin/keys", headers=admin, json={"name": "doomed"})
            assert made.status_code == 201, made.text
            key, key_id = made.json()["key"], made.json()["id"]
            assert httpx.get(b.url + "/v1/models", headers=auth(key)).status_code == 200  # now in B's cache
            time.sleep(0.5)  # B's watcher has learnt where the counters stand
            assert httpx.post(f"{a.url}/admin/keys/{key_id}/revoke", headers=admin).status_code == 200
            # Within 1 s: before the key cache's own 5 s refresh could have noticed it.
            deadline = time.monotonic() + 1.0
            while httpx.get(b.url + "/v1/models", headers=auth(key)).status_code == 200:
                assert time.monotonic() < deadline, "replica B still accepts the revoked key"
                time.sleep(0.05)
            assert httpx.get(b.url + "/v1/models", headers=auth(key)).status_code == 401
        finally:
            for gw in gws:
                gw.stop()
