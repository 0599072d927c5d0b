"""An async task whose caller asked for ``partial_images`` shows its latest partial image (a URL
of this gateway) in ``GET /v1/images/tasks/{id}`` while it runs."""

from __future__ import annotations

import time

import httpx2 as httpx
import pytest

from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel
from tests.images import fetch_image


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({"channels": [channel("c1", "openai", emu.url + "/v1",
                                                        {"gpt-image-1": "gpt-image-1"})],
                                   "local_model": False})


def test_running_task_shows_its_latest_partial(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    emu.stream_delay = 1.0
    headers = {"Authorization": f"Bearer {gw.key()}"}
    r = httpx.post(gw.url + "/v1/images/generations?async=true", headers=headers, timeout=30,
                   json={"model": "gpt-image-1", "prompt": "a fox", "size": "1024x1024", "partial_images": 2})
    assert r.status_code == 200, r.text
    task_id = r.json()["task_id"]
    partials: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = httpx.get(f"{gw.url}/v1/images/tasks/{task_id}", headers=headers, timeout=10).json()["data"]
        if task["status"] != "IN_PROGRESS":
            break
        url = (task["data"] or {}).get("partial_image_url")
        if url and url not in partials:
            partials.append(url)
            assert fetch_image(url).size == (1024, 1024)
        time.sleep(0.2)
    assert task["status"] == "SUCCESS", task
    assert len(partials) >= 1  # seen while the task ran
    assert emu.calls[-1].json["stream"] is True and emu.calls[-1].json["partial_images"] == 2
    assert "partial_image_url" not in task["data"] and len(task["data"]["data"]) == 1
