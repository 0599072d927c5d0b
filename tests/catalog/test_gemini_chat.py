"""The ``gemini`` and ``openai-chat`` protocols read their models from the catalog: a model Google
or a reseller ships tomorrow is served by configuration alone (``catalog:`` + a channel's
``models:``), end to end against the emulators; a bad entry stops the gateway with an error that
names the key; the shipped public names map where ``docs/models.md`` says; and the one image-link
scanner (``imagegate.wire.chat``) keeps a hostile answer from stalling the chat adapter."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
from google import genai
from google.genai import types
from openai import OpenAI
from PIL import Image

from tests.conftest import StartGateway
from tests.emulators.base import make_image
from tests.emulators.chat_image import ChatImageEmulator
from tests.emulators.gemini import GeminiEmulator, Model
from tests.harness import GatewayProcess, channel

# A Nano Banana Google has not shipped: three ratios, 1K only, two reference images.
NEW_GEMINI = "gemini-4-flash-image"
NEW_GEMINI_ENTRY = {"protocol": "gemini", "like": "gemini-2.5-flash-image", "sources": ["a test"],
                    "aspect_ratios": ["1:1", "4:1", "1:4"], "image_sizes": ["1K"], "max_images": 2}
# A chat-served model a reseller starts selling: one reference image.
NEW_CHAT = "gpt-image-2-chat"
NEW_CHAT_ENTRY = {"protocol": "openai-chat", "like": "gpt-4o-image", "max_images": 1}


@pytest.fixture(scope="module")
def gemini_emu() -> Iterator[GeminiEmulator]:
    with GeminiEmulator(models={NEW_GEMINI: Model(("1:1", "4:1", "1:4"), ("1K",))}) as e:
        yield e


@pytest.fixture(scope="module")
def chat_emu() -> Iterator[ChatImageEmulator]:
    with ChatImageEmulator(models=(NEW_CHAT,)) as e:
        yield e


@pytest.fixture(scope="module")
def gw(gemini_emu: GeminiEmulator, chat_emu: ChatImageEmulator,
       module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "catalog": {NEW_GEMINI: NEW_GEMINI_ENTRY, NEW_CHAT: NEW_CHAT_ENTRY},
        "channels": [
            channel("new-banana", "gemini", gemini_emu.url, {"nano-banana-4": NEW_GEMINI}),
            channel("new-chat", "openai-chat", chat_emu.url + "/v1", {"chat-image-2": NEW_CHAT}),
            # No models: the public names the catalog serves a Gemini channel by default.
            {k: v for k, v in channel("google", "gemini", gemini_emu.url, {}).items() if k != "models"},
        ],
        "local_model": False,
    })


@pytest.fixture(autouse=True)
def _reset(gemini_emu: GeminiEmulator, chat_emu: ChatImageEmulator) -> None:
    gemini_emu.reset()
    chat_emu.reset()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def error_of(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    err: dict[str, Any] = exc.value.response.json()["error"]
    return err


def image_config(emu: GeminiEmulator) -> dict[str, Any]:
    (call,) = emu.generate_calls()
    cfg: dict[str, Any] = call.json["generationConfig"].get("imageConfig", {})
    return cfg


# ---- a new Gemini model by configuration ---------------------------------------------------------


def test_new_gemini_model_is_served_with_its_own_ratios(gw: GatewayProcess, client: OpenAI,
                                                        gemini_emu: GeminiEmulator) -> None:
    r = client.images.with_raw_response.generate(model="nano-banana-4", prompt="a long banner of bananas",
                                                 response_format="b64_json", extra_body={"aspect_ratio": "21:9"})
    assert r.headers["x-imagegate-adjusted-params"] == "aspect_ratio=21:9->4:1"
    data = r.parse().data
    assert data and data[0].b64_json
    assert Image.open(io.BytesIO(base64.b64decode(data[0].b64_json))).size == (2048, 512)
    (call,) = gemini_emu.generate_calls()
    assert call.path == f"/v1beta/models/{NEW_GEMINI}:generateContent"
    assert image_config(gemini_emu) == {"aspectRatio": "4:1"}  # one tier: no imageSize sent


def test_new_gemini_model_refuses_what_its_entry_does_not_list(client: OpenAI, gemini_emu: GeminiEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="nano-banana-4", prompt="x", extra_body={"image_size": "2K"})
    assert error_of(exc)["param"] == "image_size" and "1K" in error_of(exc)["message"]
    ref = "data:image/png;base64," + base64.b64encode(make_image(32, 32, "png")).decode()
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="nano-banana-4", prompt="x", extra_body={"image": [ref] * 3})
    assert error_of(exc)["param"] == "image"
    assert gemini_emu.calls == []


def test_new_gemini_model_is_described_and_answers_to_its_google_name(gw: GatewayProcess, client: OpenAI,
                                                                      gemini_emu: GeminiEmulator) -> None:
    described = httpx.get(gw.url + "/v1/models/nano-banana-4", headers={"Authorization": f"Bearer {client.api_key}"})
    caps = described.json()["capabilities"]
    assert caps["aspect_ratios"] == ["1:1", "4:1", "1:4"] and caps["image_sizes"] == ["1K"]
    assert caps["reference_images"]["max"] == 2
    with genai.Client(api_key=client.api_key, http_options=types.HttpOptions(base_url=gw.url)) as google:
        answer = google.models.generate_content(
            model=NEW_GEMINI, contents="a tall poster",
            config=types.GenerateContentConfig(image_config=types.ImageConfig(aspect_ratio="1:4")))
    assert answer.parts and any(p.inline_data is not None for p in answer.parts)
    (call,) = gemini_emu.generate_calls()
    assert call.path == f"/v1beta/models/{NEW_GEMINI}:generateContent"
    assert image_config(gemini_emu) == {"aspectRatio": "1:4"}


# ---- the shipped public names ---------------------------------------------------------------------


@pytest.mark.parametrize(("public", "upstream", "size"), [
    ("nano-banana", "gemini-2.5-flash-image", (1024, 1024)),
    ("nano-banana-2", "gemini-3.1-flash-image-preview", (1024, 1024)),  # Google's Nano Banana 2
    ("nano-banana-pro", "gemini-3-pro-image-preview", (1024, 1024)),
    ("nano-banana-hd", "gemini-3-pro-image-preview", (4096, 4096)),  # 4K unless asked otherwise
])
def test_default_public_names(client: OpenAI, gemini_emu: GeminiEmulator, public: str, upstream: str,
                              size: tuple[int, int]) -> None:
    r = client.images.generate(model=public, prompt="a pear", response_format="b64_json", size="1024x1024")
    assert r.data and r.data[0].b64_json
    assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).size == size
    (call,) = gemini_emu.generate_calls()
    assert call.path == f"/v1beta/models/{upstream}:generateContent"


def test_nano_banana_2_draws_the_extreme_ratios_and_512(gw: GatewayProcess, client: OpenAI,
                                                        gemini_emu: GeminiEmulator) -> None:
    r = client.images.with_raw_response.generate(model="nano-banana-2", prompt="a ribbon",
                                                 extra_body={"aspect_ratio": "8:1"})
    assert "x-imagegate-adjusted-params" not in r.headers
    assert image_config(gemini_emu) == {"aspectRatio": "8:1"}
    gemini_emu.reset()
    with genai.Client(api_key=client.api_key, http_options=types.HttpOptions(base_url=gw.url)) as google:
        answer = google.models.generate_content(
            model="nano-banana-2", contents="a stamp",
            config=types.GenerateContentConfig(image_config=types.ImageConfig(aspect_ratio="1:1", image_size="512")))
    [image] = [p.inline_data.data for p in answer.parts or [] if p.inline_data is not None and p.inline_data.data]
    assert Image.open(io.BytesIO(image)).size == (512, 512)
    assert image_config(gemini_emu) == {"aspectRatio": "1:1", "imageSize": "512"}


def test_google_names_mean_the_model_that_sends_them(gw: GatewayProcess, client: OpenAI,
                                                     gemini_emu: GeminiEmulator) -> None:
    with genai.Client(api_key=client.api_key, http_options=types.HttpOptions(base_url=gw.url)) as google:
        for name, upstream in (("gemini-3-pro-image-preview", "gemini-3-pro-image-preview"),
                               ("gemini-3-pro-image", "gemini-3-pro-image-preview"),
                               ("gemini-3.1-flash-image-preview", "gemini-3.1-flash-image-preview")):
            gemini_emu.reset()
            google.models.generate_content(model=name, contents="a plum")
            (call,) = gemini_emu.generate_calls()
            assert call.path == f"/v1beta/models/{upstream}:generateContent", name
            # The Pro model under its own name, not nano-banana-hd (the same model pinned at 4K).
            assert "imageSize" not in call.json["generationConfig"].get("imageConfig", {}), name


# ---- a new chat-served model by configuration ---------------------------------------------------


def test_new_chat_model_is_served_with_its_own_limits(client: OpenAI, chat_emu: ChatImageEmulator) -> None:
    r = client.images.generate(model="chat-image-2", prompt="a red kite")
    assert r.data and r.data[0].url
    (call,) = [c for c in chat_emu.calls if c.path == "/v1/chat/completions"]
    assert call.json == {"model": NEW_CHAT, "stream": False, "messages": [{"role": "user", "content": "a red kite"}]}
    png = make_image(32, 32, "png")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(model="chat-image-2", prompt="x", image=[("a.png", png, "image/png")] * 2)
    assert error_of(exc)["param"] == "image"


def test_a_hostile_answer_does_not_stall_the_chat_adapter(gw: GatewayProcess, chat_emu: ChatImageEmulator) -> None:
    # Unclosed markdown images and a run of URL-like text: quadratic for the adapter's former
    # scanner (a minute and more), linear for the one the chat surface already used.
    chat_emu.say("![a](" * 20_000 + "http://x" * 20_000)
    r = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {gw.key()}"},
                   json={"model": "chat-image-2", "prompt": "x"}, timeout=15)
    assert r.status_code == 502 and r.json()["error"]["code"] == "no_image"


# ---- a bad entry names its key --------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "name", "entry", "key"), [
    ("gemini", NEW_GEMINI, {**NEW_GEMINI_ENTRY, "max_n": 0}, f"catalog.{NEW_GEMINI}.max_n"),
    ("gemini", NEW_GEMINI, {**NEW_GEMINI_ENTRY, "image_sizes": "1K"}, f"catalog.{NEW_GEMINI}.image_sizes"),
    ("gemini", NEW_GEMINI, {**NEW_GEMINI_ENTRY, "wire": {"api_version": "v1"}},
     f"catalog.{NEW_GEMINI}.wire.api_version"),
    ("openai-chat", NEW_CHAT, {**NEW_CHAT_ENTRY, "max_images": -1}, f"catalog.{NEW_CHAT}.max_images"),
    ("openai-chat", NEW_CHAT, {**NEW_CHAT_ENTRY, "like": "gpt-5-image"}, f"catalog.{NEW_CHAT}.like"),
])
def test_a_bad_entry_stops_the_gateway_naming_the_key(gateway_factory: StartGateway, provider: str, name: str,
                                                      entry: dict[str, Any], key: str) -> None:
    config = {"catalog": {name: entry}, "local_model": False,
              "channels": [channel("c", provider, "http://127.0.0.1:9", {"new": name})]}
    with pytest.raises(RuntimeError) as exc:
        gateway_factory(config)
    assert key in str(exc.value)
