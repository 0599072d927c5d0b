"""Channel health end to end: a real gateway, OpenAI emulators as upstreams, the official client.

The circuit breaker opens on a failing channel and routing skips it; after the cool-down one probe
closes it again. ``max_inflight`` and an upstream's 429 with ``Retry-After`` send traffic elsewhere.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel

MODELS = {"gpt-image-1": "gpt-image-1"}


def two_channels(bad: OpenAIEmulator, good: OpenAIEmulator, **first: Any) -> dict[str, Any]:
    return {"local_model": False, "channels": [
        channel("first", "openai", bad.url + "/v1", MODELS, priority=0, **first),
        channel("second", "openai", good.url + "/v1", MODELS, priority=1),
    ]}


def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def generate(c: OpenAI) -> None:
    r = c.images.generate(model="gpt-image-1", prompt="a lighthouse", response_format="b64_json")
    assert r.data and r.data[0].b64_json


def test_breaker_opens_routes_to_the_healthy_channel_and_a_probe_closes_it(gateway_factory: StartGateway) -> None:
    with OpenAIEmulator() as bad, OpenAIEmulator() as good:
        gw = gateway_factory(two_channels(bad, good, breaker={"failures": 2, "cooldown": 1.0}))
        c = client(gw)
        bad.fail(status=500, times=100)
        generate(c)
        generate(c)  # two failures in a row: the breaker of "first" opens
        assert len(bad.calls) == 2 and len(good.calls) == 2
        for _ in range(3):
            generate(c)
        assert len(bad.calls) == 2, "an open channel must not be called"
        assert len(good.calls) == 5

        bad.reset()  # the upstream recovers
        time.sleep(1.2)  # the cool-down ends: the next request is a probe
        generate(c)
        assert len(bad.calls) == 1 and len(good.calls) == 5
        generate(c)  # closed again: traffic goes to the first channel
        assert len(bad.calls) == 2 and len(good.calls) == 5


def test_a_failed_probe_opens_the_breaker_again(gateway_factory: StartGateway) -> None:
    with OpenAIEmulator() as bad, OpenAIEmulator() as good:
        gw = gateway_factory(two_channels(bad, good, breaker={"failures": 1, "cooldown": 1.0}))
        c = client(gw)
        bad.fail(status=503, times=100)
        generate(c)
        time.sleep(1.2)
        generate(c)  # the probe fails: open for another cool-down
        assert len(bad.calls) == 2
        generate(c)
        assert len(bad.calls) == 2 and len(good.calls) == 3


def test_every_channel_open_is_a_clear_503(gateway_factory: StartGateway) -> None:
    with OpenAIEmulator() as emu:
        gw = gateway_factory({"local_model": False, "channels": [
            channel("only", "openai", emu.url + "/v1", MODELS, breaker={"failures": 1, "cooldown": 30})]})
        c = client(gw)
        emu.fail(status=500, times=100)
        with pytest.raises(openai.APIStatusError) as first:
            generate(c)
        assert first.value.response.json()["error"]["code"] == "upstream_unavailable"
        with pytest.raises(openai.APIStatusError) as exc:
            generate(c)
        assert exc.value.status_code == 503
        error = exc.value.response.json()["error"]
        assert error["code"] == "channel_unavailable" and "circuit breaker" in error["message"]
        assert "only" in error["message"]
        assert len(emu.calls) == 1


def occupy(slow: OpenAIEmulator, c: OpenAI) -> threading.Thread:
    """A request in the background that ``slow`` holds for 1.5 s, once it has reached ``slow``."""
    slow.latency = 1.5
    worker = threading.Thread(target=generate, args=(c,))
    worker.start()
    deadline = time.monotonic() + 5
    while not slow.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    return worker


def test_max_inflight_sends_the_overflow_to_the_next_channel_then_503_busy(gateway_factory: StartGateway) -> None:
    with OpenAIEmulator() as slow, OpenAIEmulator() as other:
        gw = gateway_factory(two_channels(slow, other, max_inflight=1))
        c = client(gw)
        worker = occupy(slow, c)
        generate(c)  # "first" is at its cap: this one goes to "second"
        assert len(slow.calls) == 1 and len(other.calls) == 1
        worker.join()

    with OpenAIEmulator() as slow:
        gw = gateway_factory({"local_model": False, "channels": [
            channel("capped", "openai", slow.url + "/v1", MODELS, max_inflight=1)]}, name="capped")
        c = client(gw)
        worker = occupy(slow, c)
        with pytest.raises(openai.APIStatusError) as exc:
            generate(c)
        worker.join()
        assert exc.value.status_code == 503 and exc.value.response.json()["error"]["code"] == "channel_busy"
        assert len(slow.calls) == 1


def test_upstream_429_with_retry_after_backs_the_channel_off(gateway_factory: StartGateway) -> None:
    with OpenAIEmulator() as limited, OpenAIEmulator() as other:
        gw = gateway_factory(two_channels(limited, other))
        c = client(gw)
        limited.fail(status=429, headers={"Retry-After": "2"})
        generate(c)  # 429 from "first": failed over to "second"
        assert len(limited.calls) == 1 and len(other.calls) == 1
        generate(c)
        generate(c)
        assert len(limited.calls) == 1, "a channel backing off must not be called before its Retry-After"
        assert len(other.calls) == 3
        time.sleep(2.2)
        generate(c)
        assert len(limited.calls) == 2 and len(other.calls) == 3


def test_channel_rpm_sends_the_excess_to_the_next_channel(gateway_factory: StartGateway) -> None:
    with OpenAIEmulator() as first, OpenAIEmulator() as second:
        gw = gateway_factory(two_channels(first, second, rpm=2))
        c = client(gw)
        for _ in range(4):
            generate(c)
        assert len(first.calls) == 2 and len(second.calls) == 2
