"""The OpenAI Images family (``openai``, ``recraft``, ``ark``) served from the catalog: a model of a
known protocol is a configuration entry, never a code change.

One real gateway process, driven with the official ``openai`` client, against the emulators. Its
configuration adds models purely by ``catalog:`` and channel ``models:`` — a newer GPT image model
with its own size bounds and ``n``, a Recraft model with its own sizes and prompt limit, a new
Seedream — and maps a public name onto a model of an OpenAI-compatible vendor that no entry names
(the ``openai`` section's ``*``). The emulators know those models (they are test code); the gateway
learns them from the configuration alone. A bad entry stops the gateway at start-up with an error
that names the key.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from openai import OpenAI
from PIL import Image

from tests.conftest import StartGateway
from tests.emulators.ark import SEEDREAM5_LITE, SEEDREAM45, ArkEmulator
from tests.emulators.openai import ImageModel, OpenAIEmulator
from tests.emulators.recraft import V4_SIZES, RecraftEmulator
from tests.harness import GatewayProcess, channel

# An OpenAI-compatible vendor's model (not a GPT image model: it takes response_format).
VENDOR = ImageModel("vendor-image-1", ("1024x1024", "1280x720"), ("auto", "standard"), 4000, gpt=False)
# A newer GPT image model with its own free-size limits and at most 2 images per call.
GPT3 = ImageModel("gpt-image-3", ("auto",), ("auto", "low", "medium", "high"), 32000, max_n=2, custom_sizes=True,
                  multiple_of=32, max_ratio=2, max_side=2048, max_pixels=2048 * 2048, min_pixels=1024 * 1024)

CATALOG: dict[str, Any] = {
    "gpt-image-3": {"protocol": "openai", "like": "gpt-image-2", "max_n": 2,
                    "size_bounds": {"multiple_of": 32, "max_ratio": 2, "min_pixels": 1024 * 1024,
                                    "max_pixels": 2048 * 2048, "max_side": 2048}},
    "recraftv4": {"protocol": "recraft", "like": "recraftv3", "max_prompt": 10000, "sizes": sorted(V4_SIZES)},
    SEEDREAM5_LITE: {"protocol": "ark", "like": SEEDREAM45, "max_images": 14, "image_sizes": ["2K"],
                     "size_bounds": {"multiple_of": 8, "max_ratio": 16, "min_pixels": 2560 * 1440,
                                     "max_pixels": 3225 * 3225}},
}


@dataclass
class Env:
    gw: GatewayProcess
    oa: OpenAIEmulator
    recraft: RecraftEmulator
    ark: ArkEmulator
    client: OpenAI


@pytest.fixture(scope="module")
def started(module_gateway_factory: StartGateway) -> Iterator[Env]:
    with ExitStack() as stack:
        oa = stack.enter_context(OpenAIEmulator(models=(VENDOR, GPT3)))
        recraft = stack.enter_context(RecraftEmulator())
        ark = stack.enter_context(ArkEmulator())
        gw = module_gateway_factory({
            "catalog": CATALOG,
            "channels": [
                channel("oa", "openai", oa.url + "/v1", {"my-model": "vendor-image-1", "gpt-image-2": "gpt-image-2",
                                                         "gpt-image-3": "gpt-image-3"}),
                channel("rc", "recraft", recraft.url + "/v1", {"recraftv4": "recraftv4"}),
                channel("ark", "ark", ark.url + "/api/v3", {"seedream-4.5": SEEDREAM45,
                                                            "seedream-5-lite": SEEDREAM5_LITE}),
            ],
            "local_model": False,
        }, name="family")
        yield Env(gw, oa, recraft, ark, OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0))


@pytest.fixture
def env(started: Env) -> Env:
    for emu in (started.oa, started.recraft, started.ark):
        emu.reset()
    return started


def bodies(emu: OpenAIEmulator | RecraftEmulator | ArkEmulator) -> list[Any]:
    return [c.json for c in emu.calls if c.path.endswith("/images/generations")]


def size_of(b64: str | None) -> tuple[int, int]:
    assert b64
    with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
        return img.size


# ---- openai --------------------------------------------------------------------------------------


def test_an_openai_compatible_model_needs_no_catalog_entry(env: Env) -> None:
    r = env.client.images.generate(model="my-model", prompt="a kite", size="1280x720",
                                   quality="standard", n=3, response_format="b64_json")
    assert [size_of(d.b64_json) for d in r.data] == [(1280, 720)] * 3
    # Passed as the caller set it (no snapping: the upstream judges), in one call of n=3.
    assert bodies(env.oa) == [{"model": "vendor-image-1", "prompt": "a kite", "n": 3, "size": "1280x720",
                               "quality": "standard", "response_format": "b64_json"}]


@pytest.mark.parametrize(("kw", "sent"), [
    ({"size": "3840x2160"}, "3840x2160"),
    ({"size": "1536x864"}, "1536x864"),
    ({"size": "1000x1000"}, "992x992"),  # sides rounded to multiples of 16
    ({"size": "4096x4096"}, "2880x2880"),  # scaled into 8,294,400 pixels, shape kept
    ({"size": "4096x2160"}, "3840x2032"),  # scaled to the 3840 px edge
    ({"extra_body": {"aspect_ratio": "16:9"}}, "1360x768"),
])
def test_gpt_image_2_draws_any_size_within_its_bounds(env: Env, kw: dict[str, Any], sent: str) -> None:
    r = env.client.images.generate(model="gpt-image-2", prompt="x", response_format="b64_json",
                                   output_format="jpeg", **kw)
    [body] = bodies(env.oa)
    assert body["size"] == sent
    assert size_of(r.data[0].b64_json) == tuple(int(v) for v in sent.split("x"))


def test_gpt_image_2_shapes_beyond_3_to_1(env: Env) -> None:
    raw = env.client.images.with_raw_response.generate(model="gpt-image-2", prompt="x", response_format="b64_json",
                                                       extra_body={"aspect_ratio": "1:4"})
    assert raw.headers["x-imagegate-adjusted-params"] == "aspect_ratio=1:4->1:3"
    assert bodies(env.oa)[0]["size"] == "592x1776"
    env.oa.reset()
    with pytest.raises(openai.BadRequestError) as exc:
        env.client.images.generate(model="gpt-image-2", prompt="x", size="4000x1000")
    error = exc.value.response.json()["error"]
    assert error["param"] == "size" and "3:1" in error["message"]
    assert env.oa.calls == []


def test_a_new_gpt_image_model_is_a_catalog_entry(env: Env) -> None:
    r = env.client.images.generate(model="gpt-image-3", prompt="x", size="1000x600", n=3,
                                   response_format="b64_json")
    assert [size_of(d.b64_json) for d in r.data] == [(1312, 800)] * 3  # into its own 1..4 MP, multiples of 32
    assert sorted(b["n"] for b in bodies(env.oa)) == [1, 2]  # its max_n: 2 images per call
    assert all(b["model"] == "gpt-image-3" and b["size"] == "1312x800" for b in bodies(env.oa))
    env.oa.reset()
    raw = env.client.images.with_raw_response.generate(model="gpt-image-3", prompt="x",
                                                       extra_body={"aspect_ratio": "4:1"})
    assert raw.headers["x-imagegate-adjusted-params"] == "aspect_ratio=4:1->2:1"
    width, height = (int(v) for v in bodies(env.oa)[0]["size"].split("x"))
    assert width % 32 == 0 and height % 32 == 0 and 1.9 < width / height <= 2


# ---- recraft -------------------------------------------------------------------------------------


def test_a_new_recraft_model_is_a_catalog_entry(env: Env) -> None:
    prompt = "a lighthouse " * 150  # 1950 characters: over V3's 1000, within this entry's 10000
    r = env.client.images.generate(model="recraftv4", prompt=prompt, response_format="b64_json",
                                   extra_body={"aspect_ratio": "16:9"})
    assert size_of(r.data[0].b64_json) == (1344, 768)
    [body] = bodies(env.recraft)
    assert body["model"] == "recraftv4" and body["size"] == "1344x768" and body["prompt"] == prompt


# ---- ark -----------------------------------------------------------------------------------------


def test_seedream_4_5_draws_2k_and_up(env: Env) -> None:
    r = env.client.images.generate(model="seedream-4.5", prompt="x", size="1024x1024", response_format="b64_json")
    assert size_of(r.data[0].b64_json) == (1920, 1920)  # raised to its 2560x1440-pixel floor
    assert bodies(env.ark)[0]["size"] == "1920x1920"
    with pytest.raises(openai.BadRequestError) as exc:
        env.client.images.generate(model="seedream-4.5", prompt="x", extra_body={"image_size": "1K"})
    assert exc.value.response.json()["error"]["param"] == "image_size"


@pytest.mark.parametrize(("kw", "sent"), [
    ({"size": "4096x4096"}, "3224x3224"),  # into its own pixel range
    ({"extra_body": {"aspect_ratio": "16:9", "image_size": "2K"}}, "2728x1536"),
    ({"extra_body": {"image_size": "2K"}}, "2K"),
])
def test_a_new_seedream_is_a_catalog_entry(env: Env, kw: dict[str, Any], sent: str) -> None:
    env.client.images.generate(model="seedream-5-lite", prompt="x", response_format="b64_json", **kw)
    [body] = bodies(env.ark)
    assert body["model"] == SEEDREAM5_LITE and body["size"] == sent
    assert body["sequential_image_generation"] == "disabled"


# ---- a bad entry names its key ---------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "models", "catalog", "key"), [
    ("openai", {"gpt-image-3": "gpt-image-3"}, {"gpt-image-3": {"protocol": "openai", "like": "gpt-image-2",
                                                                "max_n": 0}}, "catalog.gpt-image-3.max_n"),
    ("openai", {"gpt-image-3": "gpt-image-3"}, {"gpt-image-3": {"protocol": "openai", "like": "gpt-image-2",
                                                                "wire": {"quality_map": "hd"}}},
     "catalog.gpt-image-3.wire.quality_map"),
    ("recraft", {"recraftv4": "recraftv4"}, {"recraftv4": {"protocol": "recraft", "like": "recraftv3",
                                                           "wire": {"style": "any"}}}, "catalog.recraftv4.wire.style"),
    ("ark", {"s5": SEEDREAM5_LITE}, {SEEDREAM5_LITE: {"protocol": "ark", "like": SEEDREAM45,
                                                      "size_bounds": {"max_ratio": 0.5}}},
     f"catalog.{SEEDREAM5_LITE}.size_bounds.max_ratio"),
])
def test_a_bad_entry_stops_the_gateway_naming_the_key(gateway_factory: StartGateway, provider: str,
                                                      models: dict[str, str], catalog: dict[str, Any],
                                                      key: str) -> None:
    config = {"catalog": catalog, "local_model": False,
              "channels": [channel("c", provider, "http://127.0.0.1:9/v1", models)]}
    with pytest.raises(RuntimeError, match=key.replace(".", r"\.")) as exc:
        gateway_factory(config)
    assert "Traceback" not in str(exc.value)
