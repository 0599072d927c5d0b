"""``/healthz`` and ``/readyz`` of a real gateway process: ready when its dependencies answer, not
ready while a served model has no usable channel, and not ready (yet still alive and finishing its
work) while it drains after SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx2 as httpx
import pytest

from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import channel

MODELS = {"gpt-image-1": "gpt-image-1"}


@pytest.fixture(autouse=True)
def _reset(emu: OpenAIEmulator) -> None:
    emu.reset()


def test_ready_when_everything_answers(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"channels": [channel("primary", "openai", emu.url + "/v1", MODELS)], "local_model": False})
    live = httpx.get(gw.url + "/healthz")
    assert live.status_code == 200 and live.json()["status"] == "ok"
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"draining": "ok", "database": "ok", "storage": "ok",
                                                          "channels": "ok"}}


def test_not_ready_while_a_model_has_no_usable_channel(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"channels": [channel("primary", "openai", emu.url + "/v1", MODELS,
                                               breaker={"failures": 1, "cooldown": 60})],
                          "local_model": False})
    emu.fail(status=500)
    r = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {gw.key()}"},
                   json={"model": "gpt-image-1", "prompt": "x"}, timeout=30)
    assert r.status_code >= 500
    ready = httpx.get(gw.url + "/readyz")  # the only channel's breaker is open
    assert ready.status_code == 503
    assert ready.json()["checks"]["channels"] == "no usable channel for gpt-image-1"
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_readiness_fails_while_draining(gateway_factory: StartGateway, emu: OpenAIEmulator) -> None:
    gw = gateway_factory({"channels": [channel("primary", "openai", emu.url + "/v1", MODELS)], "local_model": False})
    key = gw.key()
    emu.latency = 2.0
    answers: list[httpx.Response] = []
    slow = threading.Thread(target=lambda: answers.append(httpx.post(
        gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-image-1", "prompt": "slow"}, timeout=30)))
    slow.start()
    while not emu.calls:  # the request is in flight at the upstream
        time.sleep(0.02)
    assert gw.proc is not None
    os.kill(gw.proc.pid, signal.SIGTERM)
    time.sleep(0.2)
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["draining"] == "draining"
    assert httpx.get(gw.url + "/healthz").status_code == 200  # alive, finishing its work
    slow.join(30)
    assert answers and answers[0].status_code == 200, answers  # the in-flight request was answered
    # then the process exits by itself (uvicorn re-raises the SIGTERM it handled once it is done)
    assert gw.proc.wait(15) in (0, -signal.SIGTERM)
