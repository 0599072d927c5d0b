"""``recraft`` end to end: a real gateway, the Recraft emulator and the official ``openai`` client."""

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

from tests.conftest import StartGateway
from tests.emulators.base import Failure, make_image
from tests.emulators.recraft import RecraftEmulator
from tests.harness import GatewayProcess, channel
from tests.images import fetch_image as fetch

PATH = "/v1/images/generations"


@pytest.fixture(scope="module")
def emu() -> Iterator[RecraftEmulator]:
    with RecraftEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: RecraftEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    base = emu.url + "/v1"
    return module_gateway_factory({
        "channels": [
            channel("recraft", "recraft", base, {"recraftv3": "recraftv3",
                                                 "recraftv3-halloween": "recraftv3-halloween"}),
            channel("slow", "recraft", base, {"recraftv3-slow": "recraftv3"}, timeout=0.5),
            channel("badkey", "recraft", base, {"recraftv3-badkey": "recraftv3"}, api_key="wrong-key"),
        ],
        "local_model": False,
    })


@pytest.fixture(autouse=True)
def _reset(emu: RecraftEmulator) -> None:
    emu.reset()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def sent(emu: RecraftEmulator) -> list[dict[str, Any]]:
    return [c.json for c in emu.calls if c.path == PATH]


def error_of(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    return dict(exc.value.response.json()["error"])


# ---- generation ---------------------------------------------------------------------------------


def test_generate_url_snaps_size_and_asks_base64_upstream(client: OpenAI, emu: RecraftEmulator,
                                                          gw: GatewayProcess) -> None:
    r = client.images.generate(model="recraftv3", prompt="a lighthouse at dusk", size="1792x1024")
    assert len(r.data) == 1 and r.data[0].url and r.data[0].url.startswith(gw.url + "/files/")
    image = fetch(r.data[0].url)
    assert (image.format, image.size) == ("PNG", (1820, 1024))
    (call,) = [c for c in emu.calls if c.path == PATH]
    assert call.headers["authorization"] == "Bearer test-upstream-key"
    assert call.json == {"prompt": "a lighthouse at dusk", "model": "recraftv3", "n": 1,
                         "response_format": "b64_json", "size": "1820x1024"}


def test_generate_b64_json_with_native_n(client: OpenAI, emu: RecraftEmulator) -> None:
    r = client.images.generate(model="recraftv3", prompt="three pears", n=3, response_format="b64_json")
    assert len(r.data) == 3
    for d in r.data:
        assert d.b64_json and d.url is None
        assert Image.open(io.BytesIO(base64.b64decode(d.b64_json))).size == (1024, 1024)
    assert [b["n"] for b in sent(emu)] == [3]  # one upstream call, native n
    assert "size" not in sent(emu)[0]


def test_n_above_six_fans_out(client: OpenAI, emu: RecraftEmulator) -> None:
    r = client.images.generate(model="recraftv3", prompt="tiles", n=8, response_format="b64_json")
    assert len(r.data) == 8
    assert sorted(b["n"] for b in sent(emu)) == [2, 6]


@pytest.mark.parametrize(("kw", "size"), [
    ({"extra_body": {"aspect_ratio": "16:9"}}, "1820x1024"),
    ({"extra_body": {"aspect_ratio": "9:16"}}, "1024x1820"),
    ({"size": "1000x1333"}, "1024x1365"),
    ({"size": "2000x1000"}, "2048x1024"),
    ({"size": "1024x1024"}, "1024x1024"),
])
def test_sizes_snap_to_the_v3_list(client: OpenAI, emu: RecraftEmulator, kw: dict[str, Any], size: str) -> None:
    r = client.images.generate(model="recraftv3", prompt="x", response_format="b64_json", **kw)
    assert r.data[0].b64_json
    assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).size == tuple(map(int, size.split("x")))
    assert sent(emu)[0]["size"] == size


def test_style_substyle_seed_negative_prompt_and_controls_map(client: OpenAI, emu: RecraftEmulator) -> None:
    controls = {"artistic_level": 2, "colors": [{"rgb": [10, 20, 30]}], "no_text": True}
    r = client.images.generate(
        model="recraftv3", prompt="a fox", style="digital_illustration",  # type: ignore[arg-type]
        extra_body={"substyle": "hand_drawn", "seed": 7, "negative_prompt": "blur", "controls": controls},
    )
    assert len(r.data) == 1
    body = sent(emu)[0]
    assert body["style"] == "digital_illustration" and body["substyle"] == "hand_drawn"
    assert body["random_seed"] == 7 and "seed" not in body
    assert body["negative_prompt"] == "blur" and body["controls"] == controls


def test_style_id_replaces_style(client: OpenAI, emu: RecraftEmulator) -> None:
    client.images.generate(model="recraftv3", prompt="a fox",
                           extra_body={"style_id": "229b2a75-05e4-4580-85f9-b47ee521a00d"})
    body = sent(emu)[0]
    assert body["style_id"] == "229b2a75-05e4-4580-85f9-b47ee521a00d" and "style" not in body


def test_webp_output_format(client: OpenAI, emu: RecraftEmulator) -> None:
    r = client.images.generate(model="recraftv3", prompt="a fox", output_format="webp")
    assert r.data[0].url and fetch(r.data[0].url).format == "WEBP"
    assert sent(emu)[0]["image_format"] == "webp"


def test_halloween_is_recraftv3_with_a_halloween_preset(client: OpenAI, emu: RecraftEmulator) -> None:
    r = client.images.generate(model="recraftv3-halloween", prompt="a cat on a fence", size="1024x1024")
    assert len(r.data) == 1
    body = sent(emu)[0]
    assert body["model"] == "recraftv3"
    assert body["style"] == "digital_illustration"
    assert body["prompt"].startswith("a cat on a fence, Halloween theme")
    assert body["controls"]["colors"] == [{"rgb": [255, 117, 24]}, {"rgb": [106, 13, 173]}, {"rgb": [20, 20, 20]}]


def test_halloween_keeps_the_callers_style(client: OpenAI, emu: RecraftEmulator) -> None:
    client.images.generate(model="recraftv3-halloween", prompt="a ghost",
                           style="realistic_image")  # type: ignore[arg-type]
    assert sent(emu)[0]["style"] == "realistic_image"


# ---- refused before any upstream call -------------------------------------------------------------


@pytest.mark.parametrize(("kw", "param"), [
    ({"style": "vector_illustration"}, "style"),
    ({"style": "vivid"}, "style"),
    ({"prompt": "x" * 1001}, "prompt"),
    ({"output_format": "jpeg"}, "output_format"),
    ({"extra_body": {"substyle": "hand_drawn"}}, "substyle"),
    ({"extra_body": {"image": ["https://example.com/a.png"]}}, "image"),
])
def test_bad_requests_are_400s_naming_the_param(client: OpenAI, emu: RecraftEmulator, kw: dict[str, Any],
                                                param: str) -> None:
    args: dict[str, Any] = {"model": "recraftv3", "prompt": "a fox", **kw}
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(**args)
    assert error_of(exc)["param"] == param
    assert sent(emu) == []


def test_halloween_prompt_limit_counts_the_theme(client: OpenAI, emu: RecraftEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="recraftv3-halloween", prompt="x" * 950)
    assert error_of(exc)["param"] == "prompt"
    assert sent(emu) == []


# ---- upstream failures ----------------------------------------------------------------------------


def test_moderation_refusal_is_a_400_with_recrafts_words(client: OpenAI, emu: RecraftEmulator) -> None:
    emu.moderate()
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="recraftv3", prompt="something forbidden")
    err = error_of(exc)
    assert err["code"] == "upstream_rejected" and "content moderation" in str(err["message"])


def test_rate_limit_is_503(client: OpenAI, emu: RecraftEmulator) -> None:
    emu.fail(Failure(status=429, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="recraftv3", prompt="a fox")
    assert exc.value.status_code == 503 and error_of(exc)["code"] == "upstream_rate_limited"


def test_server_error_is_503(client: OpenAI, emu: RecraftEmulator) -> None:
    emu.fail(Failure(status=500, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="recraftv3", prompt="a fox")
    assert exc.value.status_code == 503 and error_of(exc)["code"] == "upstream_unavailable"


def test_plain_text_error_body_is_read_as_text(client: OpenAI, emu: RecraftEmulator) -> None:
    emu.fail(Failure(status=400, body="invalid size: 999x999", path=PATH))
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="recraftv3", prompt="a fox")
    assert error_of(exc)["message"] == "The upstream refused the request: invalid size: 999x999"


def test_bad_upstream_key_is_not_echoed(client: OpenAI, emu: RecraftEmulator, gw: GatewayProcess) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="recraftv3-badkey", prompt="a fox")
    assert exc.value.status_code == 502 and error_of(exc)["code"] == "upstream_auth_failed"
    assert "request unauthorized" not in str(error_of(exc)["message"])
    assert [c.headers["authorization"] for c in emu.calls] == ["Bearer wrong-key"]


def test_timeout_is_504(client: OpenAI, emu: RecraftEmulator) -> None:
    emu.fail(Failure(delay=2, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="recraftv3-slow", prompt="a fox")
    assert exc.value.status_code == 504 and error_of(exc)["code"] == "upstream_timeout"


def test_malformed_answer_is_502(client: OpenAI, emu: RecraftEmulator) -> None:
    emu.fail(Failure(malformed=True, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="recraftv3", prompt="a fox")
    assert exc.value.status_code == 502 and error_of(exc)["code"] == "upstream_bad_response"


def test_dropped_params_are_reported(client: OpenAI, emu: RecraftEmulator) -> None:
    raw = client.images.with_raw_response.generate(model="recraftv3", prompt="a fox", quality="hd",
                                                   extra_body={"image_size": "2K"})
    assert raw.headers["x-imagegate-dropped-params"] == "image_size,quality"
    assert "quality" not in sent(emu)[0]


# ---- the emulator is strict (so the tests above can fail) -------------------------------------------


@pytest.mark.parametrize(("body", "key", "status"), [
    ({"prompt": "x"}, "wrong", 401),
    ({"prompt": "x", "model": "recraftv3-halloween"}, None, 400),
    ({"prompt": "x", "size": "1792x1024"}, None, 400),
    ({"prompt": "x", "n": 7}, None, 400),
    ({"prompt": "x", "seed": 1}, None, 400),
    ({"prompt": "x", "substyle": "hand_drawn"}, None, 400),
    ({"prompt": "x", "style": "vivid"}, None, 400),
    ({"prompt": "x", "image_format": "jpeg"}, None, 400),
    ({"prompt": "x", "controls": {"colors": [{"rgb": [1, 2]}]}}, None, 400),
    ({"prompt": "x" * 1001, "model": "recraftv3"}, None, 400),
])
def test_emulator_refuses_what_recraft_refuses(emu: RecraftEmulator, body: dict[str, Any], key: str | None,
                                               status: int) -> None:
    r = httpx.post(emu.url + PATH, json=body, headers={"Authorization": f"Bearer {key or emu.api_key}"})
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["content-type"].startswith("text/plain") and r.text == "request unauthorized"
    else:
        assert r.json()["message"]


def test_an_answer_with_urls_is_downloaded(client: OpenAI, emu: RecraftEmulator) -> None:
    url = emu.host_bytes(make_image(1365, 1024, "png"), "image/png")
    emu.fail(Failure(status=200, body={"created": 1, "data": [{"image_id": "a", "url": url}]}, path=PATH))
    r = client.images.generate(model="recraftv3", prompt="a fox", response_format="b64_json")
    assert decoded_size(r.data[0].b64_json) == (1365, 1024)
    assert [c.path for c in emu.calls][-1].startswith("/_files/")


def decoded_size(b64: str | None) -> tuple[int, int]:
    assert b64
    return Image.open(io.BytesIO(base64.b64decode(b64))).size
