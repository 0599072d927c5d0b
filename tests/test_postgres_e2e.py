"""The same gateway on PostgreSQL, with two worker processes: migrations, sync requests, async
tasks claimed across processes (``FOR UPDATE SKIP LOCKED``), and the balance race (conditional
updates under real row locks). Skipped where no PostgreSQL answers on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from openai import OpenAI

from tests.conftest import StartGateway
from tests.emulators.bfl import BflEmulator
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel, postgres_database

PRICE = 1_000_000  # micro-units: 1.00 per image


@pytest.fixture(scope="module")
def emulators() -> Iterator[tuple[OpenAIEmulator, BflEmulator]]:
    with OpenAIEmulator() as oa, BflEmulator() as bfl:
        yield oa, bfl


@pytest.fixture(scope="module")
def gw(emulators: tuple[OpenAIEmulator, BflEmulator], module_gateway_factory: StartGateway) -> Iterator[GatewayProcess]:
    oa, bfl = emulators
    with postgres_database() as url:
        gw = module_gateway_factory({
            "database_url": url,
            "local_model": False,
            "channels": [channel("oa", "openai", oa.url + "/v1", {"gpt-image-1": "gpt-image-1"}),
                         channel("bfl", "bfl", bfl.url, {"flux-pro-1.1": "flux-pro-1.1"})],
            "prices": {"gpt-image-1": "1.00"},
        }, workers=2)
        yield gw
        gw.stop()  # before the database is dropped


def test_sync_generate_on_postgres(gw: GatewayProcess) -> None:
    with OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0) as c:
        r = c.images.generate(model="gpt-image-1", prompt="a harbour", response_format="url")
    assert httpx.get(r.data[0].url or "").status_code == 200


def test_async_tasks_are_claimed_once_across_processes(gw: GatewayProcess,
                                                       emulators: tuple[OpenAIEmulator, BflEmulator]) -> None:
    _, bfl = emulators
    key = gw.key()
    headers = {"Authorization": f"Bearer {key}"}
    ids = []
    for i in range(12):
        r = httpx.post(gw.url + "/v1/images/generations?async=true", headers=headers,
                       json={"model": "flux-pro-1.1", "prompt": f"boat {i}"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["task_id"])
    deadline = time.monotonic() + 60
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            data = httpx.get(f"{gw.url}/v1/images/tasks/{task_id}", headers=headers).json()["data"]
            if data["status"] != "IN_PROGRESS":
                assert data["status"] == "SUCCESS", data
                pending.discard(task_id)
        time.sleep(0.1)
    assert not pending
    prompts = [c.json["prompt"] for c in bfl.calls if c.method == "POST"]
    assert sorted(prompts) == sorted(f"boat {i}" for i in range(12))  # each submitted exactly once


def test_balance_race_on_postgres(gw: GatewayProcess) -> None:
    account = gw.account(balance=5 * PRICE)
    key = gw.key(account=account)

    async def one(client: httpx.AsyncClient) -> int:
        r = await client.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x"},
                              headers={"Authorization": f"Bearer {key}"})
        return r.status_code

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            return await asyncio.gather(*(one(client) for _ in range(30)))

    statuses = asyncio.run(burst())
    assert statuses.count(200) == 5 and statuses.count(429) == 25
    usage = httpx.get(gw.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
    assert usage["balance_micros"] == 0
