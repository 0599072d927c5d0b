"""The OpenAI Images surface end to end: a real gateway process, the OpenAI emulator upstream,
and the official ``openai`` client."""

from __future__ import annotations

import base64
import struct
import zlib

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import StartGateway
from tests.emulators.base import make_image
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel
from tests.images import decode_image as decode
from tests.images import fetch_image

MODELS = {"gpt-image-1": "gpt-image-1", "dall-e-3": "dall-e-3", "dall-e-2": "dall-e-2"}


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [channel("primary", "openai", emu.url + "/v1", MODELS)],
        "local_model": False,
        "limits": {"max_file_bytes": 2_000_000, "max_body_bytes": 8_000_000},
    })


@pytest.fixture(autouse=True)
def _reset(emu: OpenAIEmulator) -> None:
    emu.reset()


@pytest.fixture(scope="module")
def key(gw: GatewayProcess) -> str:
    return gw.key()


@pytest.fixture
def client(gw: GatewayProcess, key: str) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def error_of(exc: openai.APIStatusError) -> dict[str, object]:
    body = exc.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return dict(body["error"])


# ---- generations -------------------------------------------------------------------------------


def test_generate_url_serves_a_real_png_of_the_requested_size(client: OpenAI, gw: GatewayProcess) -> None:
    r = client.images.generate(model="gpt-image-1", prompt="a lighthouse", size="1536x1024")
    assert r.data and r.data[0].url and r.data[0].url.startswith(gw.url + "/files/")
    assert fetch_image(r.data[0].url).size == (1536, 1024)
    assert r.usage is not None and r.usage.total_tokens > 0


def test_generate_b64_json_passes_the_upstream_image_through(client: OpenAI, emu: OpenAIEmulator) -> None:
    r = client.images.generate(model="gpt-image-1", prompt="a lighthouse", response_format="b64_json",
                               output_format="webp")
    assert r.data[0].b64_json
    img = decode(r.data[0].b64_json)
    assert img.format == "WEBP" and img.size == (1024, 1024)
    sent = emu.calls[-1].json
    # GPT image models always answer base64 and refuse response_format: the gateway must not send it.
    assert "response_format" not in sent and sent["output_format"] == "webp"


def test_url_format_decodes_plain_and_data_uri_base64(client: OpenAI, emu: OpenAIEmulator) -> None:
    png = make_image(96, 64)
    for b64 in (base64.b64encode(png).decode(), "data:image/png;base64," + base64.b64encode(png).decode()):
        emu.fail(status=200, body={"created": 1, "data": [{"b64_json": b64}]})
        r = client.images.generate(model="gpt-image-1", prompt="x", response_format="url")
        assert httpx.get(r.data[0].url or "").content == png
    emu.fail(status=200, body={"created": 1, "data": [{"b64_json": "not base64 at all!"}]})
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="gpt-image-1", prompt="x", response_format="url")
    assert exc.value.status_code == 502


def test_dalle3_n_is_fanned_out_as_parallel_calls(client: OpenAI, emu: OpenAIEmulator) -> None:
    r = client.images.generate(model="dall-e-3", prompt="a fox", n=3, size="1792x1024",
                               response_format="b64_json")
    assert len(r.data) == 3
    assert all(decode(d.b64_json or "").size == (1792, 1024) for d in r.data)
    posts = [c for c in emu.calls if c.path.endswith("/images/generations")]
    assert len(posts) == 3 and all(c.json["n"] == 1 for c in posts)
    assert r.data[0].revised_prompt


def test_size_is_snapped_to_the_nearest_the_model_makes(client: OpenAI, emu: OpenAIEmulator) -> None:
    r = client.images.generate(model="gpt-image-1", prompt="wide", size="1792x1024", response_format="b64_json")
    assert emu.calls[-1].json["size"] == "1536x1024"
    assert decode(r.data[0].b64_json or "").size == (1536, 1024)
    raw = client.images.with_raw_response.generate(model="dall-e-2", prompt="tall", extra_body={"aspect_ratio": "9:16"})
    assert emu.calls[-1].json["size"] in {"256x256", "512x512", "1024x1024"}
    assert raw.parse().data[0].url


def test_dropped_parameters_are_reported(client: OpenAI) -> None:
    raw = client.images.with_raw_response.generate(model="gpt-image-1", prompt="x", style="vivid")
    assert raw.headers["x-imagegate-dropped-params"] == "style"


# ---- edits ---------------------------------------------------------------------------------------


def test_edit_with_two_images_and_a_mask(client: OpenAI, emu: OpenAIEmulator) -> None:
    first = make_image(512, 512, "png")
    second = make_image(512, 512, "jpeg", seed=2)
    mask = make_image(512, 512, "png", transparent=True)
    r = client.images.edit(model="gpt-image-1", prompt="merge them", image=[("a.png", first), ("b.jpg", second)],
                           mask=("m.png", mask), size="1024x1024")
    assert fetch_image(r.data[0].url or "").size == (1024, 1024)
    call = emu.calls[-1]
    assert call.path.endswith("/images/edits")
    assert [f.data for f in call.form["image[]"]] == [first, second]
    assert call.form["mask"][0].data == mask


def test_edit_b64_with_dalle2_single_square_png(client: OpenAI, emu: OpenAIEmulator) -> None:
    r = client.images.edit(model="dall-e-2", prompt="add a hat", image=("a.png", make_image(256, 256)),
                           size="256x256", response_format="b64_json")
    assert decode(r.data[0].b64_json or "").size == (256, 256)
    assert "image" in emu.calls[-1].form


# ---- routing ------------------------------------------------------------------------------------


def test_failover_from_a_failing_channel_to_a_healthy_one(gateway_factory: StartGateway) -> None:
    with OpenAIEmulator() as bad, OpenAIEmulator() as good:
        gw = gateway_factory({"local_model": False, "channels": [
            channel("bad", "openai", bad.url + "/v1", MODELS, priority=0),
            channel("good", "openai", good.url + "/v1", MODELS, priority=1),
        ]})
        c = OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)
        bad.fail(status=503, times=10)
        r = c.images.generate(model="gpt-image-1", prompt="x", response_format="b64_json")
        assert r.data[0].b64_json and len(bad.calls) == 1 and len(good.calls) == 1

        # A request the upstream calls invalid is invalid everywhere: no failover.
        bad.reset()
        good.reset()
        bad.fail(status=400, body={"error": {"message": "bad prompt", "type": "invalid_request_error",
                                             "param": "prompt", "code": None}})
        with pytest.raises(openai.BadRequestError) as exc:
            c.images.generate(model="gpt-image-1", prompt="x")
        assert error_of(exc.value)["code"] == "upstream_rejected"
        assert len(good.calls) == 0


def test_upstream_failures_map_to_gateway_statuses(client: OpenAI, emu: OpenAIEmulator) -> None:
    emu.fail(status=401, body={"error": {"message": "Incorrect API key sk-secret", "type": "x",
                                         "param": None, "code": "invalid_api_key"}})
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="gpt-image-1", prompt="x")
    assert exc.value.status_code == 502
    assert "sk-secret" not in exc.value.response.text  # the operator's problem, never echoed

    emu.fail(status=429, times=1)
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="gpt-image-1", prompt="x")
    assert exc.value.status_code == 503 and error_of(exc.value)["code"] == "upstream_rate_limited"

    emu.fail(malformed=True)
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="gpt-image-1", prompt="x")
    assert exc.value.status_code == 502 and error_of(exc.value)["code"] == "upstream_bad_response"

    emu.fail(status=400, body={"error": {"message": "Your request was rejected by the safety system.",
                                         "type": "image_generation_user_error", "param": None,
                                         "code": "moderation_blocked"}})
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="gpt-image-1", prompt="x")
    assert error_of(exc.value)["code"] == "content_policy_violation"
    assert "safety" in str(error_of(exc.value)["message"])


def test_upstream_timeout_is_504(client: OpenAI, emu: OpenAIEmulator) -> None:
    emu.fail(delay=6.0)  # the channel's timeout is 5 s
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="gpt-image-1", prompt="x")
    assert exc.value.status_code == 504 and error_of(exc.value)["code"] == "upstream_timeout"


# ---- auth and models ----------------------------------------------------------------------------


def test_bad_key_is_401(gw: GatewayProcess) -> None:
    c = OpenAI(base_url=gw.url + "/v1", api_key="ig-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        c.images.generate(model="gpt-image-1", prompt="x")
    assert error_of(exc.value)["code"] == "invalid_api_key"
    r = httpx.post(gw.url + "/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x"})
    assert r.status_code == 401


def test_models_list_and_allow_list(gw: GatewayProcess) -> None:
    limited = OpenAI(base_url=gw.url + "/v1", api_key=gw.key(models=["dall-e-3"]), max_retries=0)
    assert [m.id for m in limited.models.list()] == ["dall-e-3"]
    with pytest.raises(openai.PermissionDeniedError) as exc:
        limited.images.generate(model="gpt-image-1", prompt="x")
    assert error_of(exc.value)["param"] == "model"


def test_unknown_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.images.generate(model="no-such-model", prompt="x")
    err = error_of(exc.value)
    assert err["code"] == "model_not_found" and err["param"] == "model"


def test_cli_keys_create_list_revoke(gw: GatewayProcess) -> None:
    out = gw.cli("keys", "create", "--name", "cli-test", "--models", "dall-e-3").strip().splitlines()
    new_key = out[-1]
    assert new_key.startswith("ig-") and any(line.startswith("webhook secret: whsec_") for line in out)
    listing = gw.cli("keys", "list")
    assert new_key[:10] in listing and new_key not in listing  # only the prefix is shown again
    c = OpenAI(base_url=gw.url + "/v1", api_key=new_key, max_retries=0)
    assert [m.id for m in c.models.list()] == ["dall-e-3"]
    gw.cli("keys", "revoke", new_key)
    # A revocation made by another process takes effect within the key cache's TTL (5 s); use a
    # fresh key value check that the database says revoked.
    assert "revoked" in gw.cli("keys", "list")


# ---- bad input ----------------------------------------------------------------------------------


def post(gw: GatewayProcess, key: str, body: object) -> httpx.Response:
    return httpx.post(gw.url + "/v1/images/generations", json=body, headers={"Authorization": f"Bearer {key}"})


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "gpt-image-1"}, "prompt"),
    ({"model": "gpt-image-1", "prompt": "x", "n": 11}, "n"),
    ({"model": "gpt-image-1", "prompt": "x", "response_format": "png"}, "response_format"),
    ({"model": "gpt-image-1", "prompt": "x", "quality": "ultra"}, "quality"),
    ({"model": "gpt-image-1", "prompt": "x", "size": "big"}, "size"),
    ({"model": "dall-e-3", "prompt": "x" * 4001}, "prompt"),
    ({"model": "dall-e-3", "prompt": "x", "image": ["https://example.com/a.png"]}, "image"),
    ({"model": "gpt-image-1", "prompt": "x", "image": ["not base64 !!"]}, "image[0]"),
])
def test_invalid_requests_name_the_parameter(gw: GatewayProcess, key: str, body: object, param: str) -> None:
    r = post(gw, key, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_malformed_json_is_400(gw: GatewayProcess, key: str) -> None:
    r = httpx.post(gw.url + "/v1/images/generations", content=b"{not json",
                   headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:1/a.png", "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x.png",
    "http://[::1]/x.png", "http://localhost/x.png", "file:///etc/passwd",
])
def test_reference_urls_inside_the_network_are_refused(gw: GatewayProcess, key: str, url: str) -> None:
    r = post(gw, key, {"model": "gpt-image-1", "prompt": "x", "image": [url]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "image[0]"


def test_oversized_body_is_413(gw: GatewayProcess, key: str) -> None:
    r = post(gw, key, {"model": "gpt-image-1", "prompt": "x", "image": ["A" * 9_000_000]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def edit(gw: GatewayProcess, key: str, files: list[tuple[str, tuple[str, bytes, str]]],
         model: str = "gpt-image-1") -> httpx.Response:
    return httpx.post(gw.url + "/v1/images/edits", data={"model": model, "prompt": "x"}, files=files,
                      headers={"Authorization": f"Bearer {key}"})


def test_oversized_file_is_413(gw: GatewayProcess, key: str) -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * 2_100_000
    r = edit(gw, key, [("image[]", ("big.png", big, "image/png"))])
    assert r.status_code == 413 and r.json()["error"]["param"] == "image[0]"


def bomb_png(side: int = 30000) -> bytes:
    """A small PNG that declares ``side``×``side`` pixels of zeros (a decompression bomb)."""
    raw = zlib.compress(b"\0" * (side + 1) * 64, 9)  # only the first rows are present; enough to open

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_decompression_bomb_is_400(gw: GatewayProcess, key: str) -> None:
    r = edit(gw, key, [("image[]", ("bomb.png", bomb_png(), "image/png"))])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "image[0]"


def test_format_is_sniffed_from_bytes_not_the_filename(gw: GatewayProcess, key: str) -> None:
    r = edit(gw, key, [("image[]", ("photo.png", b"just some text, not an image", "image/png"))])
    assert r.status_code == 400 and r.json()["error"]["param"] == "image[0]"


@pytest.mark.parametrize(("mask", "why"), [
    (make_image(256, 256, "png", transparent=True), "size"),
    (make_image(512, 512, "png"), "alpha"),
    (make_image(512, 512, "jpeg"), "png"),
])
def test_wrong_masks_are_400(gw: GatewayProcess, key: str, mask: bytes, why: str) -> None:
    r = edit(gw, key, [("image[]", ("a.png", make_image(512, 512), "image/png")),
                       ("mask", ("m.png", mask, "image/png"))])
    assert r.status_code == 400, (why, r.text)
    assert r.json()["error"]["param"] == "mask"


def test_mask_on_a_model_that_cannot_edit_is_400(gw: GatewayProcess, key: str) -> None:
    r = edit(gw, key, [("image[]", ("a.png", make_image(64, 64), "image/png"))], model="dall-e-3")
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_too_many_files_is_400(gw: GatewayProcess, key: str) -> None:
    files = [("image[]", (f"{i}.png", make_image(32, 32), "image/png")) for i in range(17)]
    r = edit(gw, key, files)
    assert r.status_code == 400, r.text


# ---- files, health, docs ------------------------------------------------------------------------


def test_file_urls_support_range_and_reject_tampering(client: OpenAI) -> None:
    url = client.images.generate(model="gpt-image-1", prompt="x").data[0].url or ""
    r = httpx.get(url, headers={"Range": "bytes=0-7"})
    assert r.status_code == 206 and r.content == b"\x89PNG\r\n\x1a\n"
    assert r.headers["content-type"] == "image/png" and "max-age" in r.headers["cache-control"]
    assert httpx.get(url.replace("sig=", "sig=x")).status_code == 403


def test_health_openapi_and_docs(gw: GatewayProcess) -> None:
    assert httpx.get(gw.url + "/healthz").json()["status"] == "ok"
    spec = httpx.get(gw.url + "/openapi.json").json()
    assert "/v1/images/generations" in spec["paths"] and "/v1/images/edits" in spec["paths"]
    assert httpx.get(gw.url + "/docs").status_code == 200
