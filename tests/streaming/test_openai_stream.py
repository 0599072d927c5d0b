"""``stream: true`` on the OpenAI Images surface, driven with the official ``openai`` client: a GPT
image upstream that streams (its partial images passed through as they arrive), an upstream that
does not (keep-alives, then one completed event per image), failures before and after the first
event, ``response_format: url`` on a stream, and what a streamed request costs."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from tests.billing.conftest import MICRO, books
from tests.conftest import StartGateway
from tests.emulators.base import Failure, make_image
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel
from tests.images import fetch_image

MODELS = {"gpt-image-1": "gpt-image-1", "dall-e-3": "dall-e-3", "dall-e-2": "dall-e-2"}


@pytest.fixture(scope="module")
def backup() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, backup: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [channel("primary", "openai", emu.url + "/v1", {**MODELS, "img-flat": "dall-e-2"}),
                     channel("backup", "openai", backup.url + "/v1", {"gpt-image-1": "gpt-image-1"}, priority=1)],
        "local_model": False,
        "prices": {"img-flat": "1.00"},
    })


@pytest.fixture(autouse=True)
def _reset(emu: OpenAIEmulator, backup: OpenAIEmulator) -> None:
    emu.reset()
    backup.reset()


@pytest.fixture
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def pixels(b64: str) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGBA").tobytes()


def test_gpt_image_stream_passes_the_upstreams_partials(client: OpenAI, emu: OpenAIEmulator) -> None:
    stream = client.images.generate(model="gpt-image-1", prompt="a lighthouse at dusk", size="1024x1024",
                                    stream=True, partial_images=2, response_format="b64_json")
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    sent = emu.calls[-1].json
    assert sent["stream"] is True and sent["partial_images"] == 2
    # The partials are the upstream's own (each different), the completed image is the final one.
    assert len({pixels(e.b64_json) for e in events}) == 3
    done = events[-1]
    assert done.size == "1024x1024" and done.output_format == "png" and done.created_at > 0
    assert done.usage.total_tokens > 0 and done.usage.output_tokens > 0
    assert Image.open(io.BytesIO(base64.b64decode(done.b64_json))).size == (1024, 1024)


def test_gpt_image_edit_stream(client: OpenAI, emu: OpenAIEmulator) -> None:
    photo = make_image(1024, 1024, "png")
    stream = client.images.edit(model="gpt-image-1", image=("photo.png", photo, "image/png"),
                                prompt="put a hat on the cat", stream=True, partial_images=1)
    events = list(stream)
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert emu.calls[-1].path == "/v1/images/edits"
    # response_format defaults to url: the completed event carries the gateway's URL (an extension).
    url = (events[-1].model_extra or {})["url"]
    assert fetch_image(url).size == (1024, 1024)
    assert not events[-1].b64_json


def test_partials_arrive_before_the_image_is_done(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    emu.stream_delay = 1.0  # the upstream takes a second per event: 2 partials, then the image
    seen: list[tuple[str, float]] = []
    import time
    start = time.monotonic()
    with httpx.stream("POST", gw.url + "/v1/images/generations", timeout=30,
                      headers={"Authorization": f"Bearer {gw.key()}"},
                      json={"model": "gpt-image-1", "prompt": "a fox", "stream": True, "partial_images": 2}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                seen.append((line[7:], time.monotonic() - start))
    kinds = [k for k, _ in seen]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    # The second partial is sent as it arrives, a second before the completed image.
    assert seen[2][1] - seen[1][1] > 0.6


@pytest.mark.parametrize("n", [1, 2])
def test_non_streaming_upstream_sends_one_completed_event_per_image(client: OpenAI, emu: OpenAIEmulator,
                                                                     n: int) -> None:
    stream = client.images.generate(model="dall-e-2", prompt="a red fox", n=n, size="256x256", stream=True,
                                    partial_images=2, response_format="b64_json")
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.completed"] * n
    assert "stream" not in emu.calls[-1].json  # dall-e-2 does not stream: one ordinary call
    assert all(Image.open(io.BytesIO(base64.b64decode(e.b64_json))).size == (256, 256) for e in events)


def test_dropped_params_on_a_stream(gw: GatewayProcess) -> None:
    r = httpx.post(gw.url + "/v1/images/generations", timeout=30, headers={"Authorization": f"Bearer {gw.key()}"},
                   json={"model": "dall-e-2", "prompt": "a fox", "stream": True, "partial_images": 1,
                         "size": "256x256"})
    assert r.status_code == 200
    assert r.headers["x-imagegate-dropped-params"] == "partial_images"
    assert r.text.count("event: image_generation.completed") == 1


def test_failure_before_the_first_event_is_an_http_error(client: OpenAI, emu: OpenAIEmulator) -> None:
    emu.moderate()
    with pytest.raises(openai.BadRequestError) as info:
        list(client.images.generate(model="gpt-image-1", prompt="a fox", stream=True, partial_images=1))
    assert info.value.status_code == 400 and "safety" in info.value.message


def test_bad_partial_images_is_a_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        list(client.images.generate(model="gpt-image-1", prompt="a fox", stream=True, partial_images=4))
    assert info.value.param == "partial_images"


def test_stream_and_async_together_is_a_400(gw: GatewayProcess) -> None:
    r = httpx.post(gw.url + "/v1/images/generations?async=true", timeout=30,
                   headers={"Authorization": f"Bearer {gw.key()}"},
                   json={"model": "gpt-image-1", "prompt": "a fox", "stream": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "async"


def test_failover_before_the_first_event(client: OpenAI, emu: OpenAIEmulator, backup: OpenAIEmulator) -> None:
    emu.fail(Failure(status=503))
    events = list(client.images.generate(model="gpt-image-1", prompt="a fox", stream=True, partial_images=1))
    assert [e.type for e in events] == ["image_generation.partial_image", "image_generation.completed"]
    assert len(emu.calls) == 1 and len(backup.calls) == 1


def test_failure_after_the_first_event_is_an_error_event(client: OpenAI, emu: OpenAIEmulator,
                                                         backup: OpenAIEmulator) -> None:
    emu.stream_delay, emu.stream_break_after = 1.0, 2  # two partials (past the early window), then an error
    got: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        for event in client.images.generate(model="gpt-image-1", prompt="a fox", stream=True, partial_images=3):
            got.append(event)
    assert [e.type for e in got] == ["image_generation.partial_image"] * 2
    assert "failed" in info.value.message
    assert not backup.calls  # the caller saw this channel's work: no failover behind its back


def test_streamed_request_is_billed_like_any_other(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    account = gw.account(balance=10 * MICRO)
    client = OpenAI(base_url=gw.url + "/v1", api_key=gw.key(account=account), max_retries=0)
    events = list(client.images.generate(model="img-flat", prompt="a fox", n=2, size="256x256", stream=True))
    assert len(events) == 2
    assert books(gw, account).balance == 8 * MICRO
    # A stream that fails costs nothing.
    emu.fail(Failure(status=500))
    with pytest.raises(openai.InternalServerError):
        list(client.images.generate(model="img-flat", prompt="a fox", size="256x256", stream=True))
    b = books(gw, account)
    assert b.balance == 8 * MICRO and b.ledger_sum == b.balance
