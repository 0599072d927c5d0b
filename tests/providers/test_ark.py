"""``ark`` end to end: a real gateway, the Ark (Seedream / SeedEdit) emulator and the official ``openai`` client."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI
from sqlalchemy import select

from imagegate.catalog import Catalog
from imagegate.core.errors import InvalidRequest
from imagegate.db.models import Account
from imagegate.db.session import make_engine, make_sessionmaker
from tests.conftest import StartGateway
from tests.emulators.ark import SEEDEDIT, SEEDREAM3, SEEDREAM4, ArkEmulator
from tests.emulators.base import Failure, make_image
from tests.harness import GatewayProcess, channel
from tests.images import decode_image as decoded
from tests.images import fetch_image as fetch

PATH = "/api/v3/images/generations"
# Seedream 4.0's pixel range and the scaling into it: the catalog's size_bounds, applied generically.
_BOUNDS = Catalog.load().protocol("ark").spec(SEEDREAM4).size_bounds
assert _BOUNDS is not None and _BOUNDS.min_pixels is not None and _BOUNDS.max_pixels is not None
SEEDREAM4_PIXELS = (_BOUNDS.min_pixels, _BOUNDS.max_pixels)
_seedream4_pixels = _BOUNDS.fit
PRICE = 30_000  # micro-units per Seedream 4.0 image (0.03)


@pytest.fixture(scope="module")
def emu() -> Iterator[ArkEmulator]:
    with ArkEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: ArkEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    base = emu.url + "/api/v3"
    return module_gateway_factory({
        "channels": [
            channel("ark", "ark", base, {m: m for m in (SEEDREAM4, SEEDREAM3, SEEDEDIT)}),
            channel("slow", "ark", base, {"seedream-slow": SEEDREAM4}, timeout=0.5),
            channel("badkey", "ark", base, {"seedream-badkey": SEEDREAM4}, api_key="wrong-key"),
        ],
        "prices": {SEEDREAM4: {"per_image": "0.03"}},
        "local_model": False,
    })


@pytest.fixture(autouse=True)
def _reset(emu: ArkEmulator) -> None:
    emu.reset()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def sent(emu: ArkEmulator) -> list[dict[str, Any]]:
    return [c.json for c in emu.calls if c.path == PATH]


def error_of(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    return dict(exc.value.response.json()["error"])


def balance(gw: GatewayProcess, account: str) -> int:
    async def read() -> int:
        engine = make_engine(gw.db_url())
        try:
            async with make_sessionmaker(engine)() as s:
                return int((await s.execute(select(Account.balance).where(Account.id == account))).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(read())


PNG = make_image(800, 600, "png", seed=1)
URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


# ---- Seedream 4.0 ----------------------------------------------------------------------------------


def test_seedream4_generate(client: OpenAI, emu: ArkEmulator, gw: GatewayProcess) -> None:
    r = client.images.generate(model=SEEDREAM4, prompt="a red bicycle", size="1280x720")
    assert len(r.data) == 1 and r.data[0].url and r.data[0].url.startswith(gw.url + "/files/")
    assert fetch(r.data[0].url).size == (1280, 720)
    (call,) = [c for c in emu.calls if c.path == PATH]
    assert call.headers["authorization"] == "Bearer test-upstream-key"
    assert call.json == {"model": SEEDREAM4, "prompt": "a red bicycle", "response_format": "b64_json",
                         "watermark": False, "size": "1280x720", "sequential_image_generation": "disabled"}


def test_seedream4_b64_json_and_image_size(client: OpenAI, emu: ArkEmulator) -> None:
    r = client.images.generate(model=SEEDREAM4, prompt="a kite", response_format="b64_json",
                               extra_body={"image_size": "1K"})
    assert r.data[0].url is None and decoded(r.data[0].b64_json).size == (1024, 1024)
    assert sent(emu)[0]["size"] == "1K"


@pytest.mark.parametrize(("kw", "native"), [
    ({"size": "1024x1024"}, "1024x1024"),
    ({"size": "512x512"}, "960x960"),  # raised to the 1280x720 pixel floor, shape kept
    ({"size": "640x360"}, "1280x720"),
    ({"extra_body": {"aspect_ratio": "16:9", "image_size": "1K"}}, "1368x768"),
    ({"size": "2048x1024", "extra_body": {"image_size": "1K"}}, "1448x720"),
])
def test_seedream4_sizes(client: OpenAI, emu: ArkEmulator, kw: dict[str, Any], native: str) -> None:
    r = client.images.generate(model=SEEDREAM4, prompt="x", response_format="b64_json", **kw)
    assert sent(emu)[0]["size"] == native
    assert decoded(r.data[0].b64_json).size == tuple(int(v) for v in native.split("x"))


def test_seedream4_pixel_range_bounds() -> None:
    lo, hi = SEEDREAM4_PIXELS
    for w, h in ((8192, 4096), (4096, 4096), (100, 100), (1600, 100), (5000, 5000)):
        out = _seedream4_pixels(w, h, param="size")
        assert lo <= out[0] * out[1] <= hi and out[0] % 8 == 0 and out[1] % 8 == 0
        assert abs(out[0] / out[1] - w / h) / (w / h) < 0.02
    with pytest.raises(InvalidRequest):
        _seedream4_pixels(2000, 100, param="size")


def test_seedream4_reference_images_as_data_uris(client: OpenAI, emu: ArkEmulator) -> None:
    other = make_image(640, 640, "jpeg", seed=2)
    r = client.images.generate(model=SEEDREAM4, prompt="combine", size="1280x720",
                               extra_body={"image": [URI, base64.b64encode(other).decode()]})
    assert len(r.data) == 1
    assert sent(emu)[0]["image"] == [URI, "data:image/jpeg;base64," + base64.b64encode(other).decode()]


def test_seedream4_edit_endpoint(client: OpenAI, emu: ArkEmulator) -> None:
    r = client.images.edit(model=SEEDREAM4, image=[("a.png", PNG, "image/png")], prompt="make it night",
                           size="1280x720", response_format="b64_json")
    assert decoded(r.data[0].b64_json).size == (1280, 720)
    assert sent(emu)[0]["image"] == [URI]


def test_n_fans_out_one_image_per_call(client: OpenAI, emu: ArkEmulator) -> None:
    r = client.images.generate(model=SEEDREAM4, prompt="a series", n=4, size="1280x720", response_format="b64_json")
    assert len(r.data) == 4
    bodies = sent(emu)
    assert len(bodies) == 4
    assert all(b["sequential_image_generation"] == "disabled" and "sequential_image_generation_options" not in b
               for b in bodies)


def test_watermark_and_seed_pass_guidance_scale_does_not(client: OpenAI, emu: ArkEmulator) -> None:
    client.images.generate(model=SEEDREAM4, prompt="x", size="1280x720",
                           extra_body={"watermark": True, "seed": 9, "guidance_scale": 3})
    body = sent(emu)[0]
    assert body["watermark"] is True and body["seed"] == 9 and "guidance_scale" not in body


# ---- partial failures inside data[] -----------------------------------------------------------------


def test_partial_failure_delivers_and_bills_only_the_images_that_came_back(
        emu: ArkEmulator, gw: GatewayProcess) -> None:
    account = gw.account(balance=1_000_000)
    client = OpenAI(base_url=gw.url + "/v1", api_key=gw.key(account=account), max_retries=0)
    emu.sensitive_outputs(1)
    r = client.images.generate(model=SEEDREAM4, prompt="four frames", n=4, size="1280x720",
                               response_format="b64_json")
    assert len(r.data) == 3
    assert len(sent(emu)) == 4
    assert balance(gw, account) == 1_000_000 - 3 * PRICE


def test_mixed_data_items_deliver_the_images(client: OpenAI, emu: ArkEmulator) -> None:
    image = base64.b64encode(make_image(1280, 720, "jpeg")).decode()
    body = {"model": SEEDREAM4, "created": 1757323224,
            "data": [{"b64_json": image, "size": "1280x720"},
                     {"error": {"code": "OutputImageSensitiveContentDetected", "message": "sensitive"}},
                     {"b64_json": image, "size": "1280x720"}],
            "usage": {"generated_images": 2, "output_tokens": 2, "total_tokens": 2}}
    emu.fail(Failure(status=200, body=body, path=PATH))
    r = client.images.generate(model=SEEDREAM4, prompt="x", response_format="b64_json")
    assert [decoded(d.b64_json).size for d in r.data] == [(1280, 720), (1280, 720)]


def test_every_image_refused_is_a_content_refusal(client: OpenAI, emu: ArkEmulator) -> None:
    emu.sensitive_outputs(2)
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model=SEEDREAM4, prompt="x", n=2, size="1280x720")
    err = error_of(exc)
    assert err["code"] == "content_policy_violation" and "OutputImageSensitiveContentDetected" in str(err["message"])


def test_sensitive_prompt_is_a_content_refusal(client: OpenAI, emu: ArkEmulator) -> None:
    emu.refuse_prompt()
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model=SEEDREAM4, prompt="x")
    err = error_of(exc)
    assert err["code"] == "content_policy_violation" and "InputTextSensitiveContentDetected" in str(err["message"])


# ---- Seedream 3.0 and SeedEdit -------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "native"), [("1024x1024", "1024x1024"), ("256x256", "512x512"),
                                              ("4096x1024", "2048x512"), ("1792x1024", "1792x1024")])
def test_seedream3_sizes_and_guidance(client: OpenAI, emu: ArkEmulator, size: str, native: str) -> None:
    r = client.images.generate(model=SEEDREAM3, prompt="x", size=size,  # type: ignore[arg-type]
                               response_format="b64_json", extra_body={"guidance_scale": 2.5, "seed": 1})
    body = sent(emu)[0]
    assert body["size"] == native and body["guidance_scale"] == 2.5 and body["seed"] == 1
    assert "sequential_image_generation" not in body and "image" not in body
    assert decoded(r.data[0].b64_json).size == tuple(int(v) for v in native.split("x"))


def test_seededit_via_images_edit(client: OpenAI, emu: ArkEmulator) -> None:
    r = client.images.edit(model=SEEDEDIT, image=("a.png", PNG, "image/png"), prompt="add snow",
                           size="1024x1024", response_format="b64_json",
                           extra_body={"guidance_scale": "5.5"})
    assert decoded(r.data[0].b64_json).size == (800, 600)  # adaptive: follows the input
    body = sent(emu)[0]
    assert body == {"model": SEEDEDIT, "prompt": "add snow", "response_format": "b64_json", "watermark": False,
                    "size": "adaptive", "image": URI, "guidance_scale": 5.5}


def test_seededit_via_image_in_generations(client: OpenAI, emu: ArkEmulator) -> None:
    r = client.images.generate(model=SEEDEDIT, prompt="add snow", extra_body={"image": URI})
    assert r.data[0].url and fetch(r.data[0].url).size == (800, 600)
    assert sent(emu)[0]["image"] == URI


# ---- refused before any upstream call -------------------------------------------------------------------


@pytest.mark.parametrize(("model", "extra", "param"), [
    (SEEDEDIT, {}, "image"),
    (SEEDEDIT, {"image": [URI, URI]}, "image"),
    (SEEDREAM3, {"image": [URI]}, "image"),
    (SEEDREAM4, {"image": [URI] * 11}, "image"),
    (SEEDREAM3, {"guidance_scale": 20}, "guidance_scale"),
    (SEEDREAM4, {"watermark": "maybe"}, "watermark"),
    (SEEDREAM4, {"aspect_ratio": "1:20"}, "aspect_ratio"),
])
def test_bad_requests_are_400s_naming_the_param(client: OpenAI, emu: ArkEmulator, model: str,
                                                extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model=model, prompt="x", extra_body=extra)
    assert error_of(exc)["param"] == param
    assert emu.calls == []


# ---- transport and status failures ------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(429, "upstream_rate_limited"), (500, "upstream_unavailable")])
def test_failures_map_by_status(client: OpenAI, emu: ArkEmulator, status: int, code: str) -> None:
    emu.fail(Failure(status=status, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model=SEEDREAM4, prompt="x")
    assert exc.value.status_code == 503 and error_of(exc)["code"] == code


def test_bad_key_is_an_operator_problem(client: OpenAI, emu: ArkEmulator) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="seedream-badkey", prompt="x")
    assert exc.value.status_code == 502 and error_of(exc)["code"] == "upstream_auth_failed"
    assert [c.headers["authorization"] for c in emu.calls] == ["Bearer wrong-key"]


def test_timeout_is_504(client: OpenAI, emu: ArkEmulator) -> None:
    emu.fail(Failure(delay=2, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="seedream-slow", prompt="x")
    assert exc.value.status_code == 504 and error_of(exc)["code"] == "upstream_timeout"


def test_upstream_invalid_parameter_is_a_400_with_its_words(client: OpenAI, emu: ArkEmulator) -> None:
    emu.fail(Failure(status=400, path=PATH, body={"error": {"code": "InvalidParameter", "param": "prompt",
                                                            "message": "prompt too long", "type": "BadRequest"}}))
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model=SEEDREAM4, prompt="x")
    err = error_of(exc)
    assert err["code"] == "upstream_rejected" and "InvalidParameter: prompt too long" in str(err["message"])


def test_malformed_answer_is_502(client: OpenAI, emu: ArkEmulator) -> None:
    emu.fail(Failure(malformed=True, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model=SEEDREAM4, prompt="x")
    assert exc.value.status_code == 502 and error_of(exc)["code"] == "upstream_bad_response"


def test_dropped_params_are_reported(client: OpenAI, emu: ArkEmulator) -> None:
    raw = client.images.with_raw_response.edit(model=SEEDEDIT, image=("a.png", PNG, "image/png"), prompt="snow",
                                               size="1024x1024", extra_body={"negative_prompt": "rain"})
    assert raw.headers["x-imagegate-dropped-params"] == "negative_prompt,size"
    assert "negative_prompt" not in sent(emu)[0]


# ---- the emulator is strict (so the tests above can fail) -------------------------------------------


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": SEEDREAM4, "prompt": "x", "guidance_scale": 3}, 400, "guidance_scale"),
    ({"model": SEEDREAM4, "prompt": "x", "size": "512x512"}, 400, "size"),
    ({"model": SEEDREAM4, "prompt": "x", "image": [URI] * 11}, 400, "image"),
    ({"model": SEEDREAM4, "prompt": "x", "sequential_image_generation": "sometimes"}, 400,
     "sequential_image_generation"),
    ({"model": SEEDREAM3, "prompt": "x", "sequential_image_generation": "disabled"}, 400,
     "sequential_image_generation"),
    ({"model": SEEDREAM3, "prompt": "x", "size": "2049x1024"}, 400, "size"),
    ({"model": SEEDREAM3, "prompt": "x", "image": URI}, 400, "image"),
    ({"model": SEEDEDIT, "prompt": "x"}, 400, "image"),
    ({"model": SEEDEDIT, "prompt": "x", "image": URI, "size": "1024x1024"}, 400, "size"),
    ({"model": SEEDREAM4, "prompt": "x", "watermark": "false"}, 400, "watermark"),
    ({"model": SEEDREAM4, "prompt": "x", "n": 2}, 400, "n"),
    ({"model": "doubao-seedream-9", "prompt": "x"}, 404, "model"),
])
def test_emulator_refuses_what_ark_refuses(emu: ArkEmulator, body: dict[str, Any], status: int, param: str) -> None:
    r = httpx.post(emu.url + PATH, json=body, headers={"Authorization": f"Bearer {emu.api_key}"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_emulator_refuses_a_bad_key(emu: ArkEmulator) -> None:
    r = httpx.post(emu.url + PATH, json={"model": SEEDREAM4, "prompt": "x"}, headers={"Authorization": "Bearer no"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "AuthenticationError"


def test_emulator_group_generation_returns_max_images(emu: ArkEmulator) -> None:
    body = {"model": SEEDREAM4, "prompt": "a comic in 3 panels", "size": "1280x720", "response_format": "b64_json",
            "sequential_image_generation": "auto", "sequential_image_generation_options": {"max_images": 3}}
    emu.sensitive_outputs(1)
    r = httpx.post(emu.url + PATH, json=body, headers={"Authorization": f"Bearer {emu.api_key}"})
    data = r.json()["data"]
    assert "error" in data[0] and [("b64_json" in d) for d in data[1:]] == [True, True]
    assert r.json()["usage"]["generated_images"] == 2


def test_an_answer_with_urls_is_downloaded(client: OpenAI, emu: ArkEmulator) -> None:
    url = emu.host_bytes(make_image(1280, 720, "jpeg"), "image/jpeg")
    emu.fail(Failure(status=200, body={"model": SEEDREAM4, "created": 1, "data": [{"url": url, "size": "1280x720"}]},
                     path=PATH))
    r = client.images.generate(model=SEEDREAM4, prompt="x", response_format="b64_json")
    assert decoded(r.data[0].b64_json).size == (1280, 720)
    assert emu.calls[-1].path.startswith("/_files/")
