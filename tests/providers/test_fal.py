"""``fal`` end to end: a real gateway, the fal queue emulator, and the official ``openai`` client."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from tests.conftest import StartGateway
from tests.emulators.base import Failure, RecordedRequest, make_image
from tests.emulators.fal import FalEmulator
from tests.harness import GatewayProcess, channel
from tests.images import image_of

MODELS = {"flux-dev": "fal-ai/flux/dev", "flux-pro": "fal-ai/flux-pro/v1.1",
          "flux-kontext-pro": "fal-ai/flux-pro/kontext", "flux-kontext-max": "fal-ai/flux-pro/kontext/max",
          "flux-kontext-dev": "fal-ai/flux-kontext/dev"}


@pytest.fixture(scope="module")
def emu() -> Iterator[FalEmulator]:
    with FalEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: FalEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [channel("fal", "fal", emu.url, MODELS),
                     channel("slow", "fal", emu.url, {"flux-schnell": "fal-ai/flux/schnell"}, timeout=0.5)],
        "local_model": False,
        "outbound_allowlist": ["127.0.0.1"],
    })


@pytest.fixture(autouse=True)
def _reset(emu: FalEmulator) -> None:
    emu.reset()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def submits(emu: FalEmulator) -> list[RecordedRequest]:
    return [c for c in emu.calls if c.method == "POST"]


def only_submit(emu: FalEmulator) -> RecordedRequest:
    (call,) = submits(emu)
    assert isinstance(call.json, dict)
    return call


def size_of(item: openai.types.Image) -> tuple[int, int]:
    return image_of(item).size


def error_of(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, object]:
    return dict(exc.value.response.json()["error"])


# ---- generation ---------------------------------------------------------------------------------


def test_generate_submits_polls_and_reads_the_result(client: OpenAI, emu: FalEmulator, gw: GatewayProcess) -> None:
    r = client.images.generate(model="flux-dev", prompt="a red fox")
    assert r.data[0].url and r.data[0].url.startswith(gw.url + "/files/")
    assert size_of(r.data[0]) == (1024, 1024)
    call = only_submit(emu)
    assert call.path == "/fal-ai/flux/dev"
    assert call.headers["authorization"] == "Key test-upstream-key"
    assert call.json == {"prompt": "a red fox", "num_images": 1, "image_size": "square_hd"}
    gets = [c.path for c in emu.calls if c.method == "GET" and not c.path.startswith("/_files/")]
    assert gets.count(gets[-1]) == 1 and not gets[-1].endswith("/status")  # the result, read once
    assert len([p for p in gets if p.endswith("/status")]) == emu.polls


def test_size_becomes_width_and_height_within_limits(client: OpenAI, emu: FalEmulator) -> None:
    r = client.images.generate(model="flux-pro", prompt="a dune", size="1536x1024", response_format="b64_json")
    assert only_submit(emu).json["image_size"] == {"width": 1440, "height": 960}
    assert size_of(r.data[0]) == (1440, 960)


def test_aspect_ratio_uses_fals_named_size(gw: GatewayProcess, emu: FalEmulator) -> None:
    r = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {gw.key()}"},
                   json={"model": "flux-dev", "prompt": "a dune", "aspect_ratio": "16:9"}, timeout=30)
    assert r.status_code == 200, r.text
    assert only_submit(emu).json["image_size"] == "landscape_16_9"
    assert r.json()["size"] == "1024x576"


def test_n_is_num_images_and_fans_out_above_four(client: OpenAI, emu: FalEmulator) -> None:
    r = client.images.generate(model="flux-dev", prompt="boats", n=3)
    assert len(r.data) == 3 and only_submit(emu).json["num_images"] == 3
    emu.reset()
    r = client.images.generate(model="flux-dev", prompt="boats", n=6)
    assert len(r.data) == 6
    assert sorted(c.json["num_images"] for c in submits(emu) if isinstance(c.json, dict)) == [2, 4]


def test_data_uri_results_pass_as_b64_json(client: OpenAI, emu: FalEmulator) -> None:
    emu.data_uris = True
    r = client.images.generate(model="flux-dev", prompt="a teapot", response_format="b64_json",
                               output_format="png", extra_body={"seed": 42})
    assert r.data[0].b64_json and not r.data[0].b64_json.startswith("data:")
    assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).format == "PNG"
    body = only_submit(emu).json
    assert body["seed"] == 42 and body["output_format"] == "png"


def test_webp_is_refused_naming_output_format(client: OpenAI, emu: FalEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-dev", prompt="x", output_format="webp")
    assert error_of(exc)["param"] == "output_format"
    assert not submits(emu)


# ---- Kontext ------------------------------------------------------------------------------------


def test_kontext_without_image_uses_the_text_to_image_app(client: OpenAI, emu: FalEmulator) -> None:
    r = client.images.generate(model="flux-kontext-pro", prompt="a lighthouse", size="1024x768")
    call = only_submit(emu)
    assert call.path == "/fal-ai/flux-pro/kontext/text-to-image"
    assert call.json is not None and call.json["aspect_ratio"] == "4:3" and "image_url" not in call.json
    assert size_of(r.data[0])[0] > size_of(r.data[0])[1]


def test_kontext_edit_sends_the_image_as_data_uri(client: OpenAI, emu: FalEmulator) -> None:
    ref = make_image(640, 480, "png", seed=3)
    r = client.images.edit(model="flux-kontext-pro", prompt="make it night", image=("a.png", ref, "image/png"),
                           response_format="b64_json")
    call = only_submit(emu)
    assert call.path == "/fal-ai/flux-pro/kontext"
    assert call.json is not None
    assert base64.b64decode(call.json["image_url"].removeprefix("data:image/png;base64,")) == ref
    assert size_of(r.data[0]) == (640, 480)  # the emulator keeps the reference's size


def test_kontext_with_several_images_uses_the_multi_app(client: OpenAI, emu: FalEmulator) -> None:
    images = [(f"{i}.png", make_image(300, 200, "png", seed=i), "image/png") for i in range(2)]
    client.images.edit(model="flux-kontext-max", prompt="merge them", image=images)
    call = only_submit(emu)
    assert call.path == "/fal-ai/flux-pro/kontext/max/multi"
    assert call.json is not None and len(call.json["image_urls"]) == 2


def test_kontext_takes_reference_urls_written_in_the_prompt(client: OpenAI, emu: FalEmulator) -> None:
    url = emu.host_bytes(make_image(320, 240, "png", seed=9), "image/png")
    client.images.generate(model="flux-kontext-pro", prompt=f"{url} make it snowy")
    body = only_submit(emu).json
    assert body is not None and body["prompt"] == "make it snowy"
    assert body["image_url"].startswith("data:image/png;base64,")


def test_kontext_dev_generation_sends_the_reference_as_image_url(client: OpenAI, emu: FalEmulator) -> None:
    ref = make_image(640, 480, "png", seed=11)
    r = client.images.generate(model="flux-kontext-dev", prompt="make it autumn", response_format="b64_json",
                               extra_body={"image": [f"data:image/png;base64,{base64.b64encode(ref).decode()}"]})
    call = only_submit(emu)
    assert call.path == "/fal-ai/flux-kontext/dev"  # no /text-to-image or /multi sub-app for dev
    assert call.json is not None
    assert base64.b64decode(call.json["image_url"].removeprefix("data:image/png;base64,")) == ref
    assert "aspect_ratio" not in call.json and "resolution_mode" not in call.json  # fal keeps the input's shape
    assert size_of(r.data[0]) == (640, 480)


def test_kontext_dev_edit_maps_size_to_resolution_mode(client: OpenAI, emu: FalEmulator) -> None:
    ref = make_image(640, 480, "png", seed=12)
    r = client.images.edit(model="flux-kontext-dev", prompt="make it night", image=("a.png", ref, "image/png"),
                           size="1024x1536", n=2)
    assert len(r.data) == 2
    call = only_submit(emu)
    assert call.path == "/fal-ai/flux-kontext/dev" and call.json is not None
    assert call.json["resolution_mode"] == "2:3" and call.json["num_images"] == 2
    assert base64.b64decode(call.json["image_url"].removeprefix("data:image/png;base64,")) == ref
    width, height = size_of(r.data[0])
    assert width < height


def test_kontext_dev_without_a_reference_is_refused_naming_image(client: OpenAI, emu: FalEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-kontext-dev", prompt="a lighthouse")
    assert error_of(exc)["param"] == "image"
    assert not emu.calls


def test_kontext_dev_takes_one_reference_only(client: OpenAI, emu: FalEmulator) -> None:
    png = make_image(64, 64, "png")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(model="flux-kontext-dev", prompt="x", image=[("a.png", png, "image/png")] * 2)
    assert error_of(exc)["param"] == "image"
    assert not emu.calls


def test_text_model_cannot_edit(client: OpenAI, emu: FalEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(model="flux-dev", prompt="x", image=("a.png", make_image(64, 64), "image/png"))
    assert error_of(exc)["param"] == "model"
    assert not submits(emu)


# ---- failures -----------------------------------------------------------------------------------


def test_invalid_input_422_is_a_400_with_fals_words(client: OpenAI, emu: FalEmulator) -> None:
    emu.fail(Failure(status=422, body={"detail": [{"loc": ["body", "prompt"], "msg": "Prompt is too long",
                                                   "type": "string_too_long"}]}, path="/fal-ai/"))
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    err = error_of(exc)
    assert err["code"] == "upstream_rejected" and "Prompt is too long" in str(err["message"])


def test_model_error_at_result_fetch_fails_the_job(client: OpenAI, emu: FalEmulator) -> None:
    emu.fail_result(422, [{"loc": ["body", "image_url"], "msg": "Image could not be loaded",
                           "type": "image_load_error"}])
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    assert "Image could not be loaded" in str(error_of(exc)["message"])


def test_content_policy_error_type_is_a_refusal(client: OpenAI, emu: FalEmulator) -> None:
    emu.fail_result(422, [{"loc": ["body", "prompt"], "msg": "The content could not be processed",
                           "type": "content_policy_violation"}])
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    assert error_of(exc)["code"] == "content_policy_violation"


def test_nsfw_flagged_images_are_not_delivered(client: OpenAI, emu: FalEmulator) -> None:
    emu.nsfw = True
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    assert error_of(exc)["code"] == "content_policy_violation"


def test_failed_status_fails_the_job(client: OpenAI, emu: FalEmulator) -> None:
    emu.fail(Failure(status=200, body={"status": "FAILED", "error": "runner crashed"}, path="/status"))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    assert "runner crashed" in str(error_of(exc)["message"])


def test_429_on_submit_is_a_retryable_503(client: OpenAI, emu: FalEmulator) -> None:
    emu.fail(Failure(status=429, body={"detail": "Rate limit exceeded"}, path="/fal-ai/"))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    assert exc.value.status_code == 503 and error_of(exc)["code"] == "upstream_rate_limited"


def test_5xx_on_submit_is_a_503(client: OpenAI, emu: FalEmulator) -> None:
    emu.fail(Failure(status=503, body={"detail": "No runner", "error_type": "runner_scheduling_failure"},
                     path="/fal-ai/"))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    assert exc.value.status_code == 503 and error_of(exc)["code"] == "upstream_unavailable"


def test_a_flaky_status_poll_is_asked_again(client: OpenAI, emu: FalEmulator) -> None:
    emu.fail(Failure(status=502, path="/status"))
    r = client.images.generate(model="flux-dev", prompt="x")
    assert len(r.data) == 1 and len(submits(emu)) == 1


def test_submit_timeout_is_a_504(client: OpenAI, emu: FalEmulator) -> None:
    emu.fail(Failure(status=200, delay=2.0, path="/fal-ai/"))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-schnell", prompt="x")
    assert exc.value.status_code == 504 and error_of(exc)["code"] == "upstream_timeout"


def test_malformed_submit_reply_is_a_bad_response(client: OpenAI, emu: FalEmulator) -> None:
    emu.fail(Failure(malformed=True, path="/fal-ai/"))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    assert exc.value.status_code == 502 and error_of(exc)["code"] == "upstream_bad_response"
