"""A new DashScope (Qwen-Image) model is a configuration entry: the operator's ``catalog:`` plus a
channel's ``models:`` serve it end to end against the emulator with no code change, and a mistake
in such an entry stops the gateway with an error that names the key."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.conftest import StartGateway
from tests.emulators.base import RecordedRequest, make_image
from tests.emulators.dashscope import DashScopeEmulator
from tests.harness import GatewayProcess, channel
from tests.images import decode_image

MULTIMODAL = "/api/v1/services/aigc/multimodal-generation/generation"
# Qwen-Image 3.0 Pro: generation and editing on the multimodal endpoint like qwen-image-2.0-pro,
# with up to 10 reference images. The shipped catalog does not know it.
NEW_MODEL = {"protocol": "dashscope", "like": "qwen-image-2.0-pro", "max_images": 10,
             "sources": ["https://www.alibabacloud.com/help/en/model-studio/qwen-image-edit"]}


def config(emu: DashScopeEmulator, entry: dict[str, Any]) -> dict[str, Any]:
    return {"catalog": {"qwen-image-3.0-pro": entry},
            "channels": [channel("ds", "dashscope", emu.url, {"qwen-image-3": "qwen-image-3.0-pro"})],
            "local_model": False}


def posts(emu: DashScopeEmulator) -> list[RecordedRequest]:
    """The calls the gateway made, without its downloads of the result URLs."""
    return [c for c in emu.calls if c.method == "POST"]


@pytest.fixture(scope="module")
def emu() -> Iterator[DashScopeEmulator]:
    with DashScopeEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: DashScopeEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory(config(emu, NEW_MODEL), name="dashscope-catalog")


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


@pytest.fixture(autouse=True)
def _reset(emu: DashScopeEmulator) -> None:
    emu.reset()


def test_a_model_added_by_config_edits_with_its_own_limits(client: OpenAI, emu: DashScopeEmulator) -> None:
    pictures = [make_image(320 + 16 * i, 240, "png", seed=i) for i in range(5)]  # qwen-image-2.0-pro takes 3
    r = client.images.edit(model="qwen-image-3", image=[(f"{i}.png", p, "image/png") for i, p in enumerate(pictures)],
                           prompt="the five cats together on one sofa", n=2, size="1536x1024",
                           response_format="b64_json", extra_body={"seed": -1, "prompt_extend": "false"})
    assert [decode_image(d.b64_json).size for d in r.data] == [(1536, 1024)] * 2
    (call,) = posts(emu)  # one synchronous call: n=2 is native, as on the model it is like
    assert call.path == MULTIMODAL and "x-dashscope-async" not in call.headers
    assert call.json["model"] == "qwen-image-3.0-pro"
    content = call.json["input"]["messages"][0]["content"]
    assert content == [{"image": "data:image/png;base64," + base64.b64encode(p).decode()} for p in pictures] + [
        {"text": "the five cats together on one sofa"}]
    assert call.json["parameters"] == {"n": 2, "size": "1536*1024", "seed": 2147483647, "prompt_extend": False,
                                       "watermark": False}


def test_a_model_added_by_config_generates_from_text(client: OpenAI, emu: DashScopeEmulator) -> None:
    r = client.images.generate(model="qwen-image-3", prompt="a tea house", n=3, response_format="b64_json",
                               extra_body={"aspect_ratio": "16:9", "negative_prompt": "rain"})
    assert len(r.data) == 3
    (call,) = posts(emu)
    assert call.json["input"]["messages"][0]["content"] == [{"text": "a tea house"}]
    assert call.json["parameters"] == {"n": 3, "size": "1776*992", "negative_prompt": "rain", "watermark": False}
    assert decode_image(r.data[0].b64_json).size == (1776, 992)


def test_its_own_reference_limit_is_enforced_before_any_call(client: OpenAI, emu: DashScopeEmulator) -> None:
    eleven = [("a.png", make_image(64, 64, "png", seed=i), "image/png") for i in range(11)]
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(model="qwen-image-3", image=eleven, prompt="x")
    assert exc.value.response.json()["error"]["param"] == "image"
    assert "at most 10" in exc.value.response.json()["error"]["message"]
    assert emu.calls == []


@pytest.mark.parametrize(("entry", "key"), [
    ({**NEW_MODEL, "max_n": 0}, "catalog.qwen-image-3.0-pro.max_n"),
    ({**NEW_MODEL, "wire": {"endpoint": "websocket"}}, "catalog.qwen-image-3.0-pro.wire.endpoint"),
    ({**NEW_MODEL, "wire": {"endpoint": "multimodal", "free_size": {"max_pixel": 4194304}}},
     "catalog.qwen-image-3.0-pro.wire.free_size.max_pixel"),
    ({"protocol": "dashscope", "like": "qwen-image-9"}, "catalog.qwen-image-3.0-pro.like"),
])
def test_a_bad_entry_stops_the_gateway_naming_the_key(gateway_factory: StartGateway, emu: DashScopeEmulator,
                                                       entry: dict[str, Any], key: str) -> None:
    with pytest.raises(RuntimeError, match="gateway exited") as exc:
        gateway_factory(config(emu, entry), name="bad")
    assert key in str(exc.value)
    assert emu.calls == []
