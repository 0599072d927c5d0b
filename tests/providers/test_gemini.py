"""``gemini`` (Nano Banana) end to end: a real gateway, the Gemini emulator upstream, and the
official ``openai`` client — plus the passthrough request builder the Gemini surface reuses."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI

from imagegate.catalog import Catalog
from imagegate.config import ChannelConfig
from imagegate.core.errors import ContentRefused, NoImageReturned
from imagegate.core.job import Call, ImageJob, InputImage, NativeRequest
from imagegate.providers.gemini import GeminiAdapter, read_answer
from imagegate.wire.gemini import GenerateContentResponse
from tests.conftest import StartGateway
from tests.emulators.base import Failure, make_image
from tests.emulators.gemini import GeminiEmulator
from tests.harness import GatewayProcess, channel
from tests.images import decode_image as decode
from tests.images import fetch_image as fetch

MODELS = {"nano-banana": "gemini-2.5-flash-image", "nano-banana-hd": "gemini-3-pro-image-preview@4K",
          "nano-banana-2": "gemini-3-pro-image-preview"}


@pytest.fixture(scope="module")
def emu() -> Iterator[GeminiEmulator]:
    with GeminiEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: GeminiEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [
            channel("google", "gemini", emu.url, MODELS),
            # Second choice for nano-banana only: failover target.
            channel("backup", "gemini", emu.url, {"nano-banana": "gemini-2.5-flash-image"}, priority=1),
            channel("slow", "gemini", emu.url, {"nano-banana-slow": "gemini-2.5-flash-image"}, timeout=0.5),
            {**channel("badkey", "gemini", emu.url, {"nano-banana-badkey": "gemini-2.5-flash-image"}),
             "api_key": "not-the-key"},
        ],
        "local_model": False,
        "outbound_allowlist": ["127.0.0.1"],
    })


@pytest.fixture(autouse=True)
def _reset(emu: GeminiEmulator) -> None:
    emu.reset()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def sent(emu: GeminiEmulator, i: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = emu.generate_calls()[i].json
    return body


def image_config(body: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = body["generationConfig"].get("imageConfig", {})
    return cfg


def error(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    err: dict[str, Any] = exc.value.response.json()["error"]
    return err


# ---- generation ----------------------------------------------------------------------------------


def test_generate_url_maps_size_to_aspect_ratio(client: OpenAI, emu: GeminiEmulator, gw: GatewayProcess) -> None:
    r = client.images.generate(model="nano-banana", prompt="a lighthouse at dusk", size="1792x1024")
    assert r.data[0].url and r.data[0].url.startswith(gw.url + "/files/")
    assert fetch(r.data[0].url).size == (1344, 768)  # Gemini's 16:9 at 1K
    [call] = emu.generate_calls()
    assert call.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert call.headers["x-goog-api-key"] == emu.api_key
    body = call.json
    assert body["contents"] == [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}]
    assert body["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    assert image_config(body) == {"aspectRatio": "16:9"}
    assert "candidateCount" not in body["generationConfig"]


def test_generate_b64_json_with_aspect_ratio_and_usage(client: OpenAI, emu: GeminiEmulator) -> None:
    r = client.images.generate(model="nano-banana", prompt="a fox", response_format="b64_json",
                               extra_body={"aspect_ratio": "4:5"})
    assert r.data[0].b64_json and decode(r.data[0].b64_json).size == (896, 1152)
    assert image_config(sent(emu)) == {"aspectRatio": "4:5"}
    assert r.usage is not None
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens > 0
    assert r.usage.input_tokens_details.text_tokens == r.usage.input_tokens
    assert r.usage.input_tokens_details.image_tokens == 0


@pytest.mark.parametrize(("size", "ratio"), [("1000x1000", "1:1"), ("1024x1536", "2:3"), ("2560x1080", "21:9"),
                                             ("1100x1000", "1:1"), ("1200x1000", "5:4"), ("768x1024", "3:4")])
def test_size_snaps_to_the_nearest_gemini_ratio(client: OpenAI, emu: GeminiEmulator, size: str, ratio: str) -> None:
    client.images.generate(model="nano-banana", prompt="x", size=size)  # type: ignore[arg-type]
    assert image_config(sent(emu))["aspectRatio"] == ratio


def test_no_size_lets_the_model_choose(client: OpenAI, emu: GeminiEmulator) -> None:
    client.images.generate(model="nano-banana", prompt="x")
    assert "imageConfig" not in sent(emu)["generationConfig"]


def test_image_size_is_sent_to_nano_banana_2(client: OpenAI, emu: GeminiEmulator) -> None:
    r = client.images.generate(model="nano-banana-2", prompt="x", response_format="b64_json",
                               extra_body={"image_size": "2K", "aspect_ratio": "16:9"})
    assert r.data[0].b64_json and decode(r.data[0].b64_json).size == (2688, 1536)
    assert emu.generate_calls()[0].path == "/v1beta/models/gemini-3-pro-image-preview:generateContent"
    assert image_config(sent(emu)) == {"aspectRatio": "16:9", "imageSize": "2K"}


def test_nano_banana_hd_draws_at_4k(client: OpenAI, emu: GeminiEmulator) -> None:
    r = client.images.generate(model="nano-banana-hd", prompt="x", response_format="b64_json")
    assert r.data[0].b64_json and decode(r.data[0].b64_json).size == (4096, 4096)
    assert image_config(sent(emu)) == {"imageSize": "4K"}


def test_image_size_is_refused_on_nano_banana(client: OpenAI, emu: GeminiEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="nano-banana", prompt="x", extra_body={"image_size": "2K"})
    assert error(exc)["param"] == "image_size"
    assert emu.calls == []


def test_n_fans_out_into_parallel_calls(client: OpenAI, emu: GeminiEmulator) -> None:
    r = client.images.generate(model="nano-banana", prompt="three cats", n=3, size="1024x1024")
    assert len(r.data) == 3
    assert len(emu.generate_calls()) == 3
    assert all("candidateCount" not in c.json["generationConfig"] for c in emu.generate_calls())


def test_reference_images_become_inline_data(client: OpenAI, emu: GeminiEmulator) -> None:
    ref = make_image(300, 200, "png", seed=7)
    url_ref = make_image(64, 64, "jpeg", seed=8)
    hosted = emu.host_bytes(url_ref, "image/jpeg")
    r = client.images.generate(model="nano-banana", prompt="put the cat on a beach", response_format="b64_json",
                               extra_body={"image": ["data:image/png;base64," + base64.b64encode(ref).decode(),
                                                     hosted]})
    parts = sent(emu)["contents"][0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(ref).decode()}}
    assert parts[1] == {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(url_ref).decode()}}
    assert parts[2] == {"text": "put the cat on a beach"}
    assert r.data[0].b64_json and decode(r.data[0].b64_json).size == (1248, 832)  # follows the 3:2 reference
    assert r.usage is not None and r.usage.input_tokens_details.image_tokens > 0


def test_too_many_reference_images_for_flash(client: OpenAI, emu: GeminiEmulator) -> None:
    ref = "data:image/png;base64," + base64.b64encode(make_image(32, 32)).decode()
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="nano-banana", prompt="x", extra_body={"image": [ref] * 4})
    assert error(exc)["param"] == "image"
    assert emu.calls == []


# ---- edits -------------------------------------------------------------------------------------


def test_edit_sends_uploads_as_inline_data(client: OpenAI, emu: GeminiEmulator) -> None:
    a, b = make_image(256, 256, "png", seed=1), make_image(128, 256, "webp", seed=2)
    r = client.images.edit(model="nano-banana", prompt="merge them", image=[("a.png", a), ("b.webp", b)],
                           response_format="b64_json")
    assert r.data[0].b64_json
    parts = sent(emu)["contents"][0]["parts"]
    assert [p.get("inlineData", {}).get("mimeType") for p in parts] == ["image/png", "image/webp", None]
    assert base64.b64decode(parts[1]["inlineData"]["data"]) == b
    assert parts[2] == {"text": "merge them"}


def test_edit_without_any_image(gw: GatewayProcess, client: OpenAI, emu: GeminiEmulator) -> None:
    r = httpx.post(gw.url + "/v1/images/edits", headers={"Authorization": f"Bearer {client.api_key}"},
                   files={"model": (None, "nano-banana"), "prompt": (None, "a red circle"),
                          "aspect_ratio": (None, "9:16")})
    assert r.status_code == 200, r.text
    assert fetch(r.json()["data"][0]["url"]).size == (768, 1344)
    assert sent(emu)["contents"][0]["parts"] == [{"text": "a red circle"}]


def test_edit_with_a_mask_is_refused(client: OpenAI, emu: GeminiEmulator) -> None:
    img = make_image(64, 64, "png", transparent=True)
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(model="nano-banana", prompt="x", image=("a.png", img), mask=("m.png", img))
    assert error(exc)["param"] == "mask"
    assert emu.calls == []


# ---- 200 answers without an image ----------------------------------------------------------------


def test_no_image_is_a_502_with_the_models_words(client: OpenAI, emu: GeminiEmulator) -> None:
    emu.no_image("NO_IMAGE", "I can only describe this, not draw it.", times=2)
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="nano-banana", prompt="x")
    assert exc.value.status_code == 502
    err = error(exc)
    assert err["code"] == "no_image"
    assert "NO_IMAGE" in err["message"] and "I can only describe this" in err["message"]
    assert len(emu.generate_calls()) == 1  # a model's choice is not a channel fault: no failover


def test_image_safety_is_a_content_policy_violation(client: OpenAI, emu: GeminiEmulator) -> None:
    emu.no_image("IMAGE_SAFETY")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="nano-banana", prompt="x")
    err = error(exc)
    assert err["code"] == "content_policy_violation"
    assert "IMAGE_SAFETY" in err["message"]


def test_blocked_prompt_is_a_content_policy_violation(client: OpenAI, emu: GeminiEmulator) -> None:
    emu.block_prompt("PROHIBITED_CONTENT", "The prompt names prohibited content.")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="nano-banana", prompt="x")
    err = error(exc)
    assert err["code"] == "content_policy_violation"
    assert "PROHIBITED_CONTENT" in err["message"] and "prohibited content" in err["message"]


def test_one_of_n_without_image_still_delivers_the_others(client: OpenAI, emu: GeminiEmulator) -> None:
    emu.no_image("NO_IMAGE")
    r = client.images.generate(model="nano-banana", prompt="x", n=2)
    assert len(r.data) == 1
    assert len(emu.generate_calls()) == 2


# ---- upstream failures -------------------------------------------------------------------------


def test_rate_limit_fails_over_to_the_next_channel(client: OpenAI, emu: GeminiEmulator) -> None:
    emu.fail(Failure(status=429))
    r = client.images.generate(model="nano-banana", prompt="x")
    assert r.data[0].url
    assert len(emu.generate_calls()) == 2


def test_rate_limit_everywhere_is_503(client: OpenAI, emu: GeminiEmulator) -> None:
    emu.fail(Failure(status=429), times=2)
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="nano-banana", prompt="x")
    assert exc.value.status_code == 503
    err = error(exc)
    assert err["code"] == "upstream_rate_limited"
    assert "RESOURCE_EXHAUSTED" in err["message"]


def test_server_error_is_503(client: OpenAI, emu: GeminiEmulator) -> None:
    emu.fail(Failure(status=500))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="nano-banana-2", prompt="x")
    assert exc.value.status_code == 503
    assert error(exc)["code"] == "upstream_unavailable"


def test_timeout_is_504(client: OpenAI, emu: GeminiEmulator) -> None:
    emu.fail(Failure(status=200, delay=3))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="nano-banana-slow", prompt="x")
    assert exc.value.status_code == 504
    assert error(exc)["code"] == "upstream_timeout"


def test_malformed_answer_is_502(client: OpenAI, emu: GeminiEmulator) -> None:
    emu.fail(Failure(malformed=True))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="nano-banana-2", prompt="x")
    assert exc.value.status_code == 502
    assert error(exc)["code"] == "upstream_bad_response"


def test_a_wrong_channel_key_is_not_blamed_on_the_caller(client: OpenAI, emu: GeminiEmulator) -> None:
    # Google answers a bad key with 400 INVALID_ARGUMENT / API_KEY_INVALID.
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="nano-banana-badkey", prompt="x")
    assert exc.value.status_code == 502
    err = error(exc)
    assert err["code"] == "upstream_auth_failed"
    assert "not-the-key" not in err["message"] and "API key not valid" not in err["message"]
    assert emu.calls[0].headers["x-goog-api-key"] == "not-the-key"


def test_upstream_400_carries_googles_message(client: OpenAI, emu: GeminiEmulator) -> None:
    emu.fail(Failure(status=400, body={"error": {"code": 400, "message": "Request contains an invalid argument.",
                                                 "status": "INVALID_ARGUMENT"}}))
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="nano-banana-2", prompt="x")
    err = error(exc)
    assert err["code"] == "upstream_rejected"
    assert "INVALID_ARGUMENT: Request contains an invalid argument." in err["message"]


# ---- the request builder and answer reader (shared with the Gemini surface) --------------------


def _call(job: ImageJob, model: str = "gemini-3-pro-image-preview", images: tuple[InputImage, ...] = ()) -> Call:
    return Call(job, Catalog.load().protocol("gemini").spec(model), model, 1, images)


def build_request(call: Call) -> Any:
    adapter = GeminiAdapter(ChannelConfig(name="g", provider="gemini"), None)  # type: ignore[arg-type]
    return adapter.build_request(call)


def test_native_request_is_passed_through_with_only_explicit_overrides() -> None:
    native = {
        "contents": [
            {"role": "user", "parts": [{"text": "draw a cat"}]},
            {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"},
                                         "thoughtSignature": "sig"}]},
            {"role": "user", "parts": [{"text": "now make it blue"}]},
        ],
        "generationConfig": {"responseModalities": ["IMAGE"], "candidateCount": 2, "temperature": 0.4,
                             "imageConfig": {"aspectRatio": "3:4"}},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
    }
    job = ImageJob(model="nano-banana-2", prompt="now make it blue", image_size="2K", surface="gemini",
                   native=NativeRequest(protocol="gemini", body=native))
    body = build_request(_call(job)).wire()
    assert body["contents"] == native["contents"]
    assert body["safetySettings"] == native["safetySettings"]
    assert body["systemInstruction"] == native["systemInstruction"]
    assert body["generationConfig"] == {"responseModalities": ["IMAGE"], "temperature": 0.4,
                                        "imageConfig": {"aspectRatio": "3:4", "imageSize": "2K"}}


def test_native_aspect_ratio_is_overridden_only_when_the_job_sets_one() -> None:
    native = {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"aspectRatio": "3:4"}}}
    job = ImageJob(model="nano-banana", prompt="x", aspect_ratio="16:9",
                   native=NativeRequest(protocol="gemini", body=native))
    body = build_request(_call(job, "gemini-2.5-flash-image")).wire()
    assert body["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"],
                                        "imageConfig": {"aspectRatio": "16:9"}}


def test_answer_reader_skips_thoughts_and_maps_usage() -> None:
    answer = GenerateContentResponse.model_validate({
        "candidates": [{"content": {"role": "model", "parts": [
            {"inlineData": {"mimeType": "image/png", "data": "draft"}, "thought": True},
            {"text": "Here you go"},
            {"inlineData": {"mimeType": "image/jpeg", "data": "final"}},
        ]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 1300, "thoughtsTokenCount": 70,
                          "totalTokenCount": 1400,
                          "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10},
                                                  {"modality": "IMAGE", "tokenCount": 20}]},
        "modelVersion": "gemini-3-pro-image-preview-11-2025",
    })
    result = read_answer(answer)
    assert [(i.b64, i.mime) for i in result.images] == [("final", "image/jpeg")]
    assert result.text == "Here you go"
    assert result.model_version == "gemini-3-pro-image-preview-11-2025"
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.total_tokens) == (30, 1370, 1400)
    assert result.usage.input_tokens_details == {"text_tokens": 10, "image_tokens": 20}


def test_answer_reader_reasons() -> None:
    blocked = GenerateContentResponse.model_validate({"promptFeedback": {"blockReason": "SAFETY"}})
    with pytest.raises(ContentRefused) as refused:
        read_answer(blocked)
    assert refused.value.reason == "SAFETY" and refused.value.prompt_blocked
    silent = GenerateContentResponse.model_validate(
        {"candidates": [{"content": {"parts": [{"text": "Sorry."}]}, "finishReason": "STOP"}]})
    with pytest.raises(NoImageReturned) as none:
        read_answer(silent)
    assert none.value.reason == "STOP" and "Sorry." in none.value.message


def test_seed_is_sent_and_unsupported_parameters_are_reported_dropped(gw: GatewayProcess, client: OpenAI,
                                                                       emu: GeminiEmulator) -> None:
    r = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {client.api_key}"},
                   json={"model": "nano-banana", "prompt": "x", "seed": 11, "quality": "hd",
                         "output_format": "jpeg", "negative_prompt": "boats"})
    assert r.status_code == 200, r.text
    assert r.headers["x-imagegate-dropped-params"] == "negative_prompt,output_format,quality"
    assert sent(emu)["generationConfig"]["seed"] == 11
    assert sent(emu)["contents"][0]["parts"] == [{"text": "x"}]


# ---- the emulator is strict (so the tests above can fail) ----------------------------------------


X: list[dict[str, Any]] = [{"parts": [{"text": "x"}]}]


@pytest.mark.parametrize(("body", "headers", "status"), [
    ({"contents": X}, {}, 403),
    ({"contents": X}, {"x-goog-api-key": "wrong"}, 400),
    ({"contents": X, "generation_config": {"bogus": 1}}, None, 400),
    ({"contents": X, "generationConfig": {"imageConfig": {"aspectRatio": "7:5"}}}, None, 400),
    ({"contents": X, "generationConfig": {"imageConfig": {"imageSize": "2k"}}}, None, 400),
    ({"contents": X, "generationConfig": {"responseModalities": ["TEXT"]}}, None, 400),
    ({"contents": [{"parts": [{"text": "x", "inlineData": {"mimeType": "image/png", "data": "AA=="}}]}]}, None, 400),
    ({"contents": []}, None, 400),
    ({"prompt": "x"}, None, 400),
])
def test_emulator_refuses_what_google_refuses(emu: GeminiEmulator, body: dict[str, Any],
                                              headers: dict[str, str] | None, status: int) -> None:
    url = emu.url + "/v1beta/models/gemini-2.5-flash-image:generateContent"
    r = httpx.post(url, json=body, headers={"x-goog-api-key": emu.api_key} if headers is None else headers)
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) >= {"code", "message", "status"}


def test_emulator_accepts_the_key_as_a_query_parameter(emu: GeminiEmulator) -> None:
    url = emu.url + f"/v1beta/models/gemini-3-pro-image-preview:generateContent?key={emu.api_key}"
    r = httpx.post(url, json={"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                              "generationConfig": {"imageConfig": {"aspectRatio": "21:9", "imageSize": "1K"}}})
    assert r.status_code == 200, r.text
    data = r.json()["candidates"][0]["content"]["parts"][1]["inlineData"]["data"]
    assert decode(data).size == (1536, 672)
