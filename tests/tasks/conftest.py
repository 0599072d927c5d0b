"""Shared by the async-task tests: a webhook receiver and helpers to submit and poll tasks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from aiohttp import web

from tests.emulators.base import Emulator, RecordedRequest
from tests.harness import GatewayProcess


class WebhookReceiver(Emulator):
    """A loopback webhook endpoint: answers 204 and records every delivery; ``fail()`` scripts
    failing answers (status, delay) exactly as for an upstream emulator."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/hook", self._hook)]

    async def _hook(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    @property
    def hook_url(self) -> str:
        return self.url + "/hook"

    def deliveries(self, task_id: str | None = None) -> list[RecordedRequest]:
        calls = [c for c in self.calls if c.path == "/hook"]
        if task_id is not None:
            calls = [c for c in calls if isinstance(c.json, dict) and c.json.get("task_id") == task_id]
        return calls

    def wait_deliveries(self, n: int, *, task_id: str | None = None, timeout: float = 15.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.deliveries(task_id)
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"expected {n} webhook deliveries, got {len(self.deliveries(task_id))}")


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def receiver(receiver_server: WebhookReceiver) -> Iterator[WebhookReceiver]:
    receiver_server.reset()
    yield receiver_server
    receiver_server.reset()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def webhook_secret(gw: GatewayProcess, key: str) -> str:
    r = httpx.get(gw.url + "/v1/keys/self", headers=auth(key))
    assert r.status_code == 200, r.text
    secret = r.json()["webhook_secret"]
    assert isinstance(secret, str) and secret.startswith("whsec_")
    return secret


def submit(gw: GatewayProcess, key: str, body: dict[str, Any], *, webhook: str | None = None) -> str:
    params = {"async": "true", **({"webhook": webhook} if webhook else {})}
    r = httpx.post(gw.url + "/v1/images/generations", params=params, json=body, headers=auth(key), timeout=30)
    assert r.status_code == 200, r.text
    task_id = r.json()["task_id"]
    assert isinstance(task_id, str)
    return task_id


def get_task(gw: GatewayProcess, key: str, task_id: str) -> httpx.Response:
    return httpx.get(f"{gw.url}/v1/images/tasks/{task_id}", headers=auth(key), timeout=30)


def wait_task(gw: GatewayProcess, key: str, task_id: str, *, timeout: float = 20.0) -> dict[str, Any]:
    """Poll until the task is SUCCESS or FAILURE; return its task object."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = get_task(gw, key, task_id)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        if data["status"] in ("SUCCESS", "FAILURE"):
            return data
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} did not finish in {timeout} s: {get_task(gw, key, task_id).text}\n"
                         f"{gw.logs()[-3000:]}")
