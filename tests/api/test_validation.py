"""Input validation at the gateway's edge, end to end on every surface: bad values are a 400 that
names the parameter and says what is accepted — never a 500, never a silent misreading.

One gateway process serves the embedded model and the OpenAI, Gemini, chat-image, Ark and BFL
emulators; it is driven over HTTP with the official ``openai`` and ``google-genai`` clients, and
with raw requests where a client would refuse to send the bad value itself.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
from google import genai
from google.genai import types
from openai import OpenAI
from PIL import Image

from tests.conftest import StartGateway
from tests.emulators.ark import SEEDREAM4, ArkEmulator
from tests.emulators.base import make_image
from tests.emulators.bfl import BflEmulator
from tests.emulators.chat_image import ChatImageEmulator
from tests.emulators.gemini import GeminiEmulator
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel

LOCAL = "imagegate-shapes"
PUBLIC_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "9:21", "21:9", "1:4", "4:1",
                 "1:8", "8:1")


class Env:
    def __init__(self, gw: GatewayProcess, oa: OpenAIEmulator, gem: GeminiEmulator, chat: ChatImageEmulator,
                 ark: ArkEmulator, bfl: BflEmulator) -> None:
        self.gw, self.oa, self.gem, self.chat, self.ark, self.bfl = gw, oa, gem, chat, ark, bfl
        self.key = gw.key()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        headers = {**self.auth, **kw.pop("headers", {})}
        if body is not None:
            kw["json"] = body
        return httpx.post(self.gw.url + path, headers=headers, timeout=60, **kw)

    def gemini(self, model: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.gw.url}/v1beta/models/{model}:generateContent", json=body,
                          headers={"x-goog-api-key": self.key}, timeout=60)

    def reset(self) -> None:
        for emu in (self.oa, self.gem, self.chat, self.ark, self.bfl):
            emu.reset()


@pytest.fixture(scope="module")
def env(module_gateway_factory: StartGateway) -> Iterator[Env]:
    with OpenAIEmulator() as oa, GeminiEmulator() as gem, ChatImageEmulator() as chat, ArkEmulator() as ark, \
            BflEmulator() as bfl:
        gw = module_gateway_factory({
            "channels": [
                channel("oa", "openai", oa.url + "/v1",
                        {"gpt-image-1": "gpt-image-1", "dall-e-2": "dall-e-2", "dall-e-3": "dall-e-3"}),
                channel("gem", "gemini", gem.url, {"nano-banana": "gemini-2.5-flash-image"}),
                channel("chat", "openai-chat", chat.url + "/v1", {"gpt-4o-image": "gpt-4o-image"}),
                channel("ark", "ark", ark.url + "/api/v3", {"seedream": SEEDREAM4}),
                channel("bfl", "bfl", bfl.url, {"flux-dev": "flux-dev", "flux-kontext-pro": "flux-kontext-pro"}),
            ],
            "outbound_allowlist": ["127.0.0.1"],
            "tasks": {"workers": 2, "poll_seconds": 0.2},
        }, name="validation")  # the embedded model is served too (local_model defaults to on)
        yield Env(gw, oa, gem, chat, ark, bfl)


@pytest.fixture
def e(env: Env) -> Iterator[Env]:
    env.reset()
    yield env
    env.reset()


@pytest.fixture
def client(e: Env) -> Iterator[OpenAI]:
    with OpenAI(base_url=e.gw.url + "/v1", api_key=e.key, max_retries=0) as c:
        yield c


def openai_error(resp: httpx.Response) -> dict[str, Any]:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    err: dict[str, Any] = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    return err


def google_error(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 400, (resp.status_code, resp.text)
    err: dict[str, Any] = resp.json()["error"]
    assert set(err) == {"code", "message", "status", "details"} and err["status"] == "INVALID_ARGUMENT", err
    assert err["details"] == [{"@type": "type.googleapis.com/google.rpc.RequestInfo",
                               "requestId": resp.headers["x-request-id"]}], err
    return err


def pixels(b64: str | None) -> np.ndarray:
    assert b64
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def gemini_body(text: str = "a red circle", **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        body["generationConfig"] = config
    return body


# ---- seeds ----------------------------------------------------------------------------------------


def test_negative_seeds_draw_on_every_surface(e: Env, client: OpenAI) -> None:
    """Gemini clients send negative int32 seeds; the embedded model (numpy) needs unsigned ones."""
    def draw(seed: int) -> np.ndarray:
        r = client.images.generate(model=LOCAL, prompt="a small white square", size="64x64",
                                   response_format="b64_json", extra_body={"seed": seed})
        return pixels(r.data[0].b64_json)

    assert np.array_equal(draw(-5), draw(-5))
    assert not np.array_equal(draw(-5), draw(5))
    assert draw(-(2**31)).shape == (64, 64, 3)

    with genai.Client(api_key=e.key, http_options=types.HttpOptions(base_url=e.gw.url, api_version="v1beta")) as g:
        answer = g.models.generate_content(model=LOCAL, contents="a red circle",
                                           config=types.GenerateContentConfig(seed=-7))
        assert answer.candidates and answer.candidates[0].finish_reason == "STOP"

    chat = client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": "a red circle"}],
                                          extra_body={"seed": -9})
    assert "![image](" in (chat.choices[0].message.content or "")

    # async: the task ends SUCCESS (it used to end FAILURE "internal error")
    r = e.post("/v1/images/generations?async=true", {"model": LOCAL, "prompt": "a blue star", "seed": -11,
                                                     "size": "64x64"})
    assert r.status_code == 200, r.text
    task = wait_task(e, r.json()["task_id"])
    assert task["status"] == "SUCCESS", task


def test_negative_seed_is_mapped_for_an_upstream_that_takes_unsigned_seeds(e: Env, client: OpenAI) -> None:
    client.images.generate(model="seedream", prompt="x", extra_body={"seed": -5})
    [sent] = [c.json for c in e.ark.calls if c.path.endswith("/images/generations")]
    assert sent["seed"] == -5 & 0x7FFFFFFF  # Ark takes 0..2^31-1 (and -1: random)
    # Gemini's own seed is an int32: passed as given
    client.images.generate(model="nano-banana", prompt="x", extra_body={"seed": -5})
    [call] = e.gem.generate_calls()
    assert call.json["generationConfig"]["seed"] == -5


def wait_task(e: Env, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{e.gw.url}/v1/images/tasks/{task_id}", headers=e.auth)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        if data["status"] in ("SUCCESS", "FAILURE"):
            return data
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


# ---- every integer parameter, every surface -----------------------------------------------------------

HUGE = 2**70
BAD_COUNTS = [0, -1, 11, HUGE, 1.5, 2.0, True, "2", None]
BAD_SEEDS = [2**31, -(2**31) - 1, HUGE, 1.5, True, "7"]
BAD_COMPRESSION = [-1, 101, HUGE, 50.5, True, "50"]

IMAGES_JSON = (
    [("n", v) for v in BAD_COUNTS if v is not None]
    + [("seed", v) for v in BAD_SEEDS]
    + [("output_compression", v) for v in BAD_COMPRESSION]
)


@pytest.mark.parametrize(("param", "value"), IMAGES_JSON)
@pytest.mark.parametrize("model", [LOCAL, "gpt-image-1"])
def test_bad_integer_on_images_generations(e: Env, model: str, param: str, value: Any) -> None:
    err = openai_error(e.post("/v1/images/generations", {"model": model, "prompt": "x", param: value}))
    assert err["param"] == param and param in err["message"], err
    assert e.oa.calls == []


@pytest.mark.parametrize(("param", "value"), [
    ("n", "0"), ("n", "11"), ("n", "-1"), ("n", str(HUGE)), ("n", "1.5"), ("n", "two"),
    ("seed", str(2**31)), ("seed", str(HUGE)), ("seed", "1.5"), ("seed", "true"), ("seed", "x"),
    ("output_compression", "101"), ("output_compression", "-1"), ("output_compression", "high"),
])
def test_bad_integer_on_images_edits(e: Env, param: str, value: str) -> None:
    png = make_image(64, 64, "png")
    resp = e.post("/v1/images/edits", data={"model": LOCAL, "prompt": "x", param: value},
                  files={"image": ("a.png", png, "image/png")})
    err = openai_error(resp)
    assert err["param"] == param and param in err["message"], err


@pytest.mark.parametrize(("param", "value"), [("n", v) for v in BAD_COUNTS if v is not None]
                         + [("seed", v) for v in BAD_SEEDS])
@pytest.mark.parametrize("model", [LOCAL, "gpt-4o-image"])
def test_bad_integer_on_chat_completions(e: Env, model: str, param: str, value: Any) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "a red circle"}], param: value}
    err = openai_error(e.post("/v1/chat/completions", body))
    assert err["param"] == param and param in err["message"], err
    assert e.chat.calls == []


# 0 is proto3's "unset" (Google draws its default of one): not a bad value on this surface
@pytest.mark.parametrize(("param", "value"), [("candidateCount", v) for v in BAD_COUNTS if v not in (None, 0)]
                         + [("seed", v) for v in BAD_SEEDS])
@pytest.mark.parametrize("model", [LOCAL, "nano-banana"])
def test_bad_integer_on_gemini_generate_content(e: Env, model: str, param: str, value: Any) -> None:
    err = google_error(e.gemini(model, gemini_body(**{param: value})))
    assert param in err["message"], err
    assert e.gem.generate_calls() == []


@pytest.mark.parametrize(("param", "value"), [
    ("steps", 0), ("steps", 51), ("steps", -3), ("steps", HUGE), ("steps", 1.5), ("steps", True), ("steps", "abc"),
    ("guidance", True), ("guidance", "abc"), ("guidance", 99),
])
def test_bad_integer_extra_passed_to_an_adapter(e: Env, param: str, value: Any) -> None:
    err = openai_error(e.post("/v1/images/generations", {"model": "flux-dev", "prompt": "x", param: value}))
    assert err["param"] == param and param in err["message"], err
    assert e.bfl.calls == []


def test_integer_beyond_64_bits_in_any_extra_is_400(e: Env) -> None:
    err = openai_error(e.post("/v1/images/generations", {"model": LOCAL, "prompt": "x", "num_inference_steps": HUGE}))
    assert err["param"] == "num_inference_steps" and "num_inference_steps" in err["message"], err


# ---- prompt length ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "limit"), [(LOCAL, 32000), ("nano-banana", 32000), ("gpt-4o-image", 32000),
                                              ("flux-dev", 32000), ("dall-e-2", 1000), ("dall-e-3", 4000),
                                              ("gpt-image-1", 32000)])
def test_prompt_longer_than_the_model_takes_is_400(e: Env, model: str, limit: int) -> None:
    prompt = "a red circle " * (limit // 13 + 10)
    err = openai_error(e.post("/v1/images/generations", {"model": model, "prompt": prompt}))
    assert err["param"] == "prompt" and str(limit) in err["message"] and str(len(prompt)) in err["message"], err
    assert e.oa.calls == [] and e.gem.calls == [] and e.chat.calls == [] and e.bfl.calls == []


def test_prompt_cap_on_the_conversational_surfaces(e: Env) -> None:
    prompt = "x" * 2_270_000
    err = google_error(e.gemini("nano-banana", gemini_body(prompt)))
    assert "prompt" in err["message"] and "32000" in err["message"]
    chat = {"model": "gpt-4o-image", "messages": [{"role": "user", "content": prompt}]}
    err = openai_error(e.post("/v1/chat/completions", chat))
    assert err["param"] == "prompt" and "32000" in err["message"]
    assert e.gem.calls == [] and e.chat.calls == []


def test_global_prompt_cap_is_configurable(gateway_factory: StartGateway) -> None:
    with OpenAIEmulator() as oa:
        gw = gateway_factory({"channels": [channel("oa", "openai", oa.url + "/v1", {"gpt-image-1": "gpt-image-1"})],
                              "local_model": False, "limits": {"max_prompt_chars": 100}})
        resp = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {gw.key()}"},
                          json={"model": "gpt-image-1", "prompt": "y" * 101})
        err = openai_error(resp)
        assert err["param"] == "prompt" and "100" in err["message"] and "101" in err["message"]
        assert oa.calls == []


# ---- sizes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "size", "needles"), [
    ("gpt-image-1", "100000x100000", ("too large", "1536x1024")),
    (LOCAL, "100000x100000", ("too large", "2048")),
    (LOCAL, "4096x4096", ("2048",)),
    (LOCAL, "1x1", ("too small", "64")),
    ("dall-e-2", "1x1", ("too small", "256x256")),
    ("flux-dev", "10x4000", ("too small", "64")),
])
def test_size_out_of_range_says_what_is_accepted(e: Env, model: str, size: str, needles: tuple[str, ...]) -> None:
    err = openai_error(e.post("/v1/images/generations", {"model": model, "prompt": "x", "size": size}))
    assert err["param"] == "size" and "must look like" not in err["message"], err
    assert all(n in err["message"] for n in needles), err
    chat = {"model": model, "messages": [{"role": "user", "content": "x"}], "size": size}
    assert openai_error(e.post("/v1/chat/completions", chat))["param"] == "size"
    assert e.oa.calls == [] and e.bfl.calls == []


# ---- bodies that are not JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["form", "multipart"])
def test_form_body_on_a_json_endpoint_says_what_content_type_is_expected(e: Env, how: str) -> None:
    fields = {"model": LOCAL, "prompt": "x"}
    kw: dict[str, Any] = {"data": fields} if how == "form" else {"files": {k: (None, v) for k, v in fields.items()}}
    for path in ("/v1/images/generations", "/v1/chat/completions"):
        err = openai_error(e.post(path, **kw))
        assert "application/json" in err["message"] and "Invalid JSON" not in err["message"], (path, err)
    resp = httpx.post(f"{e.gw.url}/v1beta/models/{LOCAL}:generateContent", headers={"x-goog-api-key": e.key}, **kw)
    assert "application/json" in google_error(resp)["message"]
    # ``curl -d`` without ``-H``: a JSON body under a form content type is read all the same
    body = b'{"model": "imagegate-shapes", "prompt": "x", "size": "64x64"}'
    resp = httpx.post(e.gw.url + "/v1/images/generations", content=body,
                      headers={**e.auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200, resp.text


# ---- reference images given as other URLs ------------------------------------------------------------


@pytest.mark.parametrize("ref", ["file:///etc/passwd", "ftp://127.0.0.1/a.png", "gopher://127.0.0.1:70/x",
                                 "javascript:alert(1)", "FILE:///etc/passwd"])
def test_reference_image_scheme_outside_http_is_refused_clearly(e: Env, ref: str) -> None:
    err = openai_error(e.post("/v1/images/generations", {"model": LOCAL, "prompt": "x", "image": ref}))
    assert err["param"] == "image[0]", err
    msg = err["message"]
    assert "http" in msg and "base64" in msg and "data URI" in msg and "not valid base64" not in msg, err
    chat = {"model": LOCAL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": ref}}]}]}
    err = openai_error(e.post("/v1/chat/completions", chat))
    assert err["param"] == "messages[0].content[1].image_url" and "http" in err["message"], err
    assert "not valid base64" not in err["message"]


# ---- the async flag ---------------------------------------------------------------------------------------


def test_async_flag_that_is_not_a_boolean_is_400(e: Env) -> None:
    for value in ("maybe", "2", "", "truee"):
        resp = e.post("/v1/images/generations", {"model": LOCAL, "prompt": "x"}, params={"async": value})
        err = openai_error(resp)
        assert err["param"] == "async" and "true" in err["message"] and "false" in err["message"], (value, err)
    for value, is_task in (("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)):
        resp = e.post("/v1/images/generations", {"model": LOCAL, "prompt": "x", "size": "64x64"},
                      params={"async": value})
        assert resp.status_code == 200, resp.text
        assert ("task_id" in resp.json()) is is_task, value


# ---- aspect ratios -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["nano-banana", LOCAL, "gpt-image-1", "flux-kontext-pro"])
@pytest.mark.parametrize("ratio", ["11:3", "7:5", "1:20", "2.35:1"])
def test_aspect_ratio_outside_the_known_set_is_400_listing_the_model_ratios(e: Env, model: str, ratio: str) -> None:
    err = openai_error(e.post("/v1/images/generations", {"model": model, "prompt": "x", "aspect_ratio": ratio}))
    assert err["param"] == "aspect_ratio" and ratio in err["message"], err
    assert "16:9" in err["message"] and "1:1" in err["message"], err
    assert e.gem.calls == [] and e.oa.calls == [] and e.bfl.calls == []


def test_gemini_surface_aspect_ratio_goes_through_the_same_check(e: Env) -> None:
    err = google_error(e.gemini("nano-banana", gemini_body(imageConfig={"aspectRatio": "11:3"})))
    assert "aspect_ratio" in err["message"] and "11:3" in err["message"] and "21:9" in err["message"]
    assert e.gem.calls == []


def test_public_ratio_the_model_lacks_is_snapped_and_reported(e: Env, client: OpenAI) -> None:
    raw = client.images.with_raw_response.generate(model="nano-banana", prompt="x", extra_body={"aspect_ratio": "4:1"})
    assert raw.headers["x-imagegate-adjusted-params"] == "aspect_ratio=4:1->21:9"
    assert e.gem.generate_calls()[-1].json["generationConfig"]["imageConfig"]["aspectRatio"] == "21:9"

    raw = client.images.with_raw_response.generate(model="nano-banana", prompt="x", extra_body={"aspect_ratio": "16:9"})
    assert "x-imagegate-adjusted-params" not in raw.headers

    raw = client.images.with_raw_response.generate(model="gpt-image-1", prompt="x",
                                                   extra_body={"aspect_ratio": "16:9"})
    assert raw.headers["x-imagegate-adjusted-params"] == "aspect_ratio=16:9->1536x1024"

    resp = e.gemini("nano-banana", gemini_body(imageConfig={"aspectRatio": "4:1"}))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-imagegate-adjusted-params"] == "aspect_ratio=4:1->21:9"

    chat = client.chat.completions.with_raw_response.create(
        model="nano-banana", messages=[{"role": "user", "content": "x"}], extra_body={"aspect_ratio": "1:8"})
    assert chat.headers["x-imagegate-adjusted-params"] == "aspect_ratio=1:8->9:16"

    for ratio in PUBLIC_RATIOS:  # a model with free sizes draws every ratio of the public set as asked
        raw = client.images.with_raw_response.generate(model=LOCAL, prompt="x", response_format="b64_json",
                                                       extra_body={"aspect_ratio": ratio})
        assert "x-imagegate-adjusted-params" not in raw.headers
        h, w, _ = pixels(raw.parse().data[0].b64_json).shape
        a, b = (int(x) for x in ratio.split(":"))
        assert abs(w / h - a / b) / (a / b) < 0.05, (ratio, w, h)
