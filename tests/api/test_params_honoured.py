"""Every parameter a surface receives is honoured or reported, never silently lost (issue #11):

- chat completions and Gemini ``generateContent`` carry every image parameter into the job, so a
  model that ignores one lists it in ``x-imagegate-dropped-params``;
- an edit without an image is refused unless the model draws edits from the prompt alone;
- reference images on ``/v1/images/generations`` reach the upstream of every model that takes
  them (checked over the whole catalog, each upstream's emulator recording what it received),
  and are a 400 naming ``image`` for models that take none.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx2 as httpx
import pytest
from openai import OpenAI

from imagegate.catalog import Catalog
from imagegate.core.spec import ModelSpec
from imagegate.providers.registry import ADAPTERS
from tests.conftest import StartGateway
from tests.emulators.ark import ArkEmulator
from tests.emulators.base import Emulator, make_image
from tests.emulators.bfl import BflEmulator
from tests.emulators.chat_image import ChatImageEmulator
from tests.emulators.dashscope import DashScopeEmulator
from tests.emulators.fal import FalEmulator
from tests.emulators.gemini import GeminiEmulator
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.recraft import RecraftEmulator
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import GatewayProcess, channel

# provider id → (emulator class, the base URL path its channel uses)
EMULATORS: dict[str, tuple[type[Emulator], str]] = {
    "openai": (OpenAIEmulator, "/v1"),
    "recraft": (RecraftEmulator, "/v1"),
    "dashscope": (DashScopeEmulator, ""),
    "ark": (ArkEmulator, "/api/v3"),
    "openai-chat": (ChatImageEmulator, "/v1"),
    "fal": (FalEmulator, ""),
    "replicate": (ReplicateEmulator, ""),
    "gemini": (GeminiEmulator, ""),
    "bfl": (BflEmulator, ""),
}
REFERENCE = make_image(256, 256, "png", seed=11)
REFERENCE_B64 = base64.b64encode(REFERENCE).decode()


SHIPPED = Catalog.load()


def spec_of(provider: str, name: str) -> ModelSpec:
    return SHIPPED.protocol(provider).spec(name)


def served(provider: str) -> dict[str, str]:
    return SHIPPED.protocol(provider).served_as


# Every public model of the catalog, under "<provider>/<name>" (several providers serve "flux-dev").
CATALOG = [(pid, public, upstream) for pid in EMULATORS for public, upstream in served(pid).items()]


def test_every_adapter_but_the_embedded_one_is_in_the_catalog() -> None:
    assert set(ADAPTERS) - set(EMULATORS) == {"local"}  # a new adapter must join this audit


class Env:
    def __init__(self, gw: GatewayProcess, emulators: dict[str, Emulator]) -> None:
        self.gw, self.emulators = gw, emulators
        self.key = gw.key()

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.gw.url + path, headers={"Authorization": f"Bearer {self.key}"}, timeout=60, **kw)


@pytest.fixture(scope="module")
def env(module_gateway_factory: StartGateway) -> Iterator[Env]:
    with ExitStack() as stack:
        emulators = {pid: stack.enter_context(cls()) for pid, (cls, _) in EMULATORS.items()}
        channels = [channel(pid, pid, emulators[pid].url + path,
                            {f"{pid}/{public}": up for public, up in served(pid).items()})
                    for pid, (_, path) in EMULATORS.items()]
        channels += [
            channel("oa", "openai", emulators["openai"].url + "/v1",
                    {"gpt-image-1": "gpt-image-1", "dall-e-3": "dall-e-3"}),
            channel("gem", "gemini", emulators["gemini"].url, {"nano-banana": "gemini-2.5-flash-image"}),
        ]
        gw = module_gateway_factory({"channels": channels, "local_model": True,
                                     "outbound_allowlist": ["127.0.0.1"]}, name="params")
        yield Env(gw, emulators)


@pytest.fixture(autouse=True)
def _reset(env: Env) -> None:
    for emu in env.emulators.values():
        emu.reset()


def received_reference(emu: Emulator) -> bool:
    """The reference reached the upstream: as raw bytes (multipart) or base64 (JSON, data URIs)."""
    return any(REFERENCE in c.body or REFERENCE_B64.encode() in c.body for c in emu.calls)


# ---- references on /v1/images/generations, over the whole catalog ------------------------------

@pytest.mark.parametrize(("provider", "public", "upstream"), CATALOG,
                         ids=[f"{p}/{m}" for p, m, _ in CATALOG])
def test_generation_reference_reaches_the_upstream_or_is_refused(env: Env, provider: str, public: str,
                                                                 upstream: str) -> None:
    spec = spec_of(provider, upstream)
    r = env.post("/v1/images/generations", json={
        "model": f"{provider}/{public}", "prompt": "the same cat, in winter",
        "image": [f"data:image/png;base64,{REFERENCE_B64}"], "response_format": "b64_json"})
    emu = env.emulators[provider]
    if spec.max_images > 0 and spec.images_on_generate:
        assert r.status_code == 200, r.text
        assert received_reference(emu), f"{provider}/{public} dropped the reference image"
    else:
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "image"
        assert emu.calls == []


def test_gpt_image_generation_with_references_goes_to_the_upstream_edits(env: Env) -> None:
    second = make_image(128, 96, "jpeg", seed=3)
    r = env.post("/v1/images/generations", json={
        "model": "gpt-image-1", "prompt": "both cats together", "size": "1536x1024", "moderation": "low",
        "image": [f"data:image/png;base64,{REFERENCE_B64}", base64.b64encode(second).decode()]})
    assert r.status_code == 200, r.text
    [call] = env.emulators["openai"].calls
    assert call.path == "/v1/images/edits"
    assert [f.data for f in call.form["image[]"]] == [REFERENCE, second]
    assert call.form["prompt"] == ["both cats together"] and call.form["size"] == ["1536x1024"]
    assert "moderation" not in call.form  # a generations-only field the edits endpoint refuses


@pytest.mark.parametrize("model", ["dall-e-3", "openai/dall-e-2"])
def test_dall_e_generation_with_a_reference_is_refused(env: Env, model: str) -> None:
    r = env.post("/v1/images/generations", json={"model": model, "prompt": "a cat",
                                                 "image": [REFERENCE_B64]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "image" and model.split("/")[-1] in error["message"]
    assert env.emulators["openai"].calls == []


# ---- /v1/images/edits without an image ---------------------------------------------------------

def edit_without_image(env: Env, model: str) -> httpx.Response:
    return env.post("/v1/images/edits", files={"model": (None, model), "prompt": (None, "a red circle")})


@pytest.mark.parametrize("model", ["gpt-image-1", "imagegate-shapes", "openai-chat/gpt-4o-image",
                                   "bfl/flux-kontext-pro"])
def test_edit_without_an_image_is_refused(env: Env, model: str) -> None:
    r = edit_without_image(env, model)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "image" and error["type"] == "invalid_request_error"
    assert all(emu.calls == [] for emu in env.emulators.values())


def test_nano_banana_edits_from_the_prompt_alone(env: Env) -> None:
    r = edit_without_image(env, "nano-banana")
    assert r.status_code == 200, r.text
    [call] = env.emulators["gemini"].calls
    assert call.json["contents"][0]["parts"] == [{"text": "a red circle"}]


# ---- chat completions: every image parameter reaches the job -----------------------------------

def chat(env: Env, model: str, content: Any, **extra: Any) -> httpx.Response:
    return env.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}],
                                                 **extra})


def shapes_edit(env: Env, strength: float) -> bytes:
    """imagegate-shapes refining a picture through chat; the answer's image bytes."""
    r = chat(env, "imagegate-shapes", [
        {"type": "text", "text": "a yellow circle"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{REFERENCE_B64}"}}],
        seed=7, strength=strength, size="64x64")
    assert r.status_code == 200, r.text
    assert "x-imagegate-dropped-params" not in r.headers  # the model takes seed, size and strength
    url = r.json()["choices"][0]["message"]["content"].split("](", 1)[1].rstrip(")")
    got = httpx.get(url)
    assert got.status_code == 200
    return got.content


def test_chat_strength_reaches_a_model_that_honours_it(env: Env) -> None:
    light, again, strong = shapes_edit(env, 0.2), shapes_edit(env, 0.2), shapes_edit(env, 0.95)
    assert light == again  # same seed, same strength: the same picture
    assert strong != light  # so the difference is the strength, which the model received


def test_chat_parameters_a_model_ignores_are_reported(env: Env) -> None:
    with OpenAI(base_url=env.gw.url + "/v1", api_key=env.key, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-image-1", messages=[{"role": "user", "content": "a fox"}], temperature=0.2,
            extra_body={"strength": 0.4, "watermark": False, "output_format": "jpeg", "output_compression": 50,
                        "moderation": "low"})
    # temperature is a chat setting, not an image parameter: accepted and not reported.
    assert raw.headers["x-imagegate-dropped-params"] == "strength,watermark"
    [call] = env.emulators["openai"].calls
    assert (call.json["output_format"], call.json["output_compression"], call.json["moderation"]) == ("jpeg", 50, "low")


def test_chat_image_parameters_are_validated_like_on_the_images_endpoint(env: Env) -> None:
    r = chat(env, "imagegate-shapes", "a circle", strength=1.5)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "strength"


# ---- Gemini generateContent: generation settings only a Gemini upstream honours ----------------

def gemini(env: Env, model: str, config: dict[str, Any]) -> httpx.Response:
    body = {"contents": [{"role": "user", "parts": [{"text": "a lighthouse"}]}], "generationConfig": config}
    return env.post(f"/v1beta/models/{model}:generateContent", json=body)


def test_gemini_settings_are_reported_when_the_upstream_cannot_honour_them(env: Env) -> None:
    config = {"temperature": 0.3, "topK": 20, "seed": 5,
              "imageConfig": {"aspectRatio": "16:9", "personGeneration": "ALLOW_ADULT"}}
    r = gemini(env, "gpt-image-1", config)
    assert r.status_code == 200, r.text
    assert r.headers["x-imagegate-dropped-params"] == (
        "generationConfig.imageConfig.personGeneration,generationConfig.temperature,generationConfig.topK,seed")
    [call] = env.emulators["openai"].calls
    assert call.json["size"] == "1536x1024"


def test_gemini_settings_reach_a_gemini_upstream_and_are_not_reported(env: Env) -> None:
    r = gemini(env, "nano-banana", {"temperature": 0.3, "topK": 20, "seed": 5, "imageConfig": {"aspectRatio": "16:9"}})
    assert r.status_code == 200, r.text
    assert "x-imagegate-dropped-params" not in r.headers
    [call] = env.emulators["gemini"].calls
    sent = call.json["generationConfig"]
    assert (sent["temperature"], sent["topK"], sent["seed"]) == (0.3, 20, 5)
    assert sent["imageConfig"] == {"aspectRatio": "16:9"}
