"""``replicate`` end to end: a real gateway, the Replicate emulator, and the official ``openai``
client."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI
from PIL import Image

from tests.conftest import StartGateway
from tests.emulators.base import Failure, RecordedRequest, make_image
from tests.emulators.replicate import NSFW_ERROR, ReplicateEmulator
from tests.harness import GatewayProcess, channel
from tests.images import image_of

VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
MODELS = {"flux-dev": "black-forest-labs/flux-dev", "flux-schnell": "black-forest-labs/flux-schnell",
          "flux-pro": "black-forest-labs/flux-1.1-pro", "flux-kontext-pro": "black-forest-labs/flux-kontext-pro",
          "flux-kontext-dev": "black-forest-labs/flux-kontext-dev", "flux": f"black-forest-labs/flux-schnell:{VERSION}"}


@pytest.fixture(scope="module")
def emu() -> Iterator[ReplicateEmulator]:
    with ReplicateEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: ReplicateEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [
            channel("replicate", "replicate", emu.url, MODELS),
            channel("no-wait", "replicate", emu.url, {"flux-kontext-max": "black-forest-labs/flux-kontext-max"},
                    options={"wait": 0}),
            channel("slow", "replicate", emu.url, {"flux-pro-1.1": "black-forest-labs/flux-1.1-pro"},
                    options={"wait": 0}, timeout=0.5),
        ],
        "local_model": False,
        "outbound_allowlist": ["127.0.0.1"],
    })


@pytest.fixture(autouse=True)
def _reset(emu: ReplicateEmulator) -> None:
    emu.reset()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def creates(emu: ReplicateEmulator) -> list[RecordedRequest]:
    return [c for c in emu.calls if c.method == "POST"]


def only_create(emu: ReplicateEmulator) -> RecordedRequest:
    (call,) = creates(emu)
    assert isinstance(call.json, dict)
    return call


def polls(emu: ReplicateEmulator) -> list[RecordedRequest]:
    return [c for c in emu.calls if c.method == "GET" and c.path.startswith("/v1/predictions/")]


def size_of(item: openai.types.Image) -> tuple[int, int]:
    return image_of(item).size


def error_of(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, object]:
    return dict(exc.value.response.json()["error"])


# ---- generation ---------------------------------------------------------------------------------


def test_fast_model_answers_within_the_wait(client: OpenAI, emu: ReplicateEmulator, gw: GatewayProcess) -> None:
    r = client.images.generate(model="flux-schnell", prompt="a red fox")
    assert r.data[0].url and r.data[0].url.startswith(gw.url + "/files/")
    assert size_of(r.data[0]) == (1024, 1024)
    call = only_create(emu)
    assert call.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert call.headers["authorization"] == "Bearer test-upstream-key"
    assert call.headers["prefer"] == "wait=5"
    assert call.json == {"input": {"prompt": "a red fox", "num_outputs": 1}}
    assert not polls(emu)


def test_slow_prediction_is_polled_until_it_succeeds(client: OpenAI, emu: ReplicateEmulator) -> None:
    emu.duration = 2
    r = client.images.generate(model="flux-schnell", prompt="a slow fox")
    assert len(r.data) == 1 and len(creates(emu)) == 1
    assert len(polls(emu)) == 3  # processing, processing, succeeded


def test_without_prefer_wait_the_prediction_is_polled(client: OpenAI, emu: ReplicateEmulator) -> None:
    r = client.images.generate(model="flux-kontext-max", prompt="a lighthouse")
    assert len(r.data) == 1
    assert "prefer" not in only_create(emu).headers
    assert len(polls(emu)) == 1


def test_size_maps_to_the_nearest_aspect_ratio(client: OpenAI, emu: ReplicateEmulator) -> None:
    r = client.images.generate(model="flux-dev", prompt="a dune", size="1792x1024", response_format="b64_json")
    assert only_create(emu).json["input"]["aspect_ratio"] == "16:9"
    assert size_of(r.data[0]) == (1344, 768)


def test_n_is_num_outputs_where_the_model_has_it(client: OpenAI, emu: ReplicateEmulator) -> None:
    r = client.images.generate(model="flux-schnell", prompt="boats", n=3)
    assert len(r.data) == 3 and only_create(emu).json["input"]["num_outputs"] == 3
    emu.reset()
    r = client.images.generate(model="flux-pro", prompt="boats", n=2)
    assert len(r.data) == 2 and len(creates(emu)) == 2
    assert all("num_outputs" not in c.json["input"] for c in creates(emu) if isinstance(c.json, dict))


def test_data_uri_outputs_seed_and_format(client: OpenAI, emu: ReplicateEmulator) -> None:
    emu.data_uris = True
    r = client.images.generate(model="flux-pro", prompt="a teapot", response_format="b64_json",
                               output_format="jpeg", extra_body={"seed": 7})
    assert r.data[0].b64_json and not r.data[0].b64_json.startswith("data:")
    assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).format == "JPEG"
    inp = only_create(emu).json["input"]
    assert inp["seed"] == 7 and inp["output_format"] == "jpg"


def test_pinned_version_uses_the_predictions_endpoint(client: OpenAI, emu: ReplicateEmulator) -> None:
    client.images.generate(model="flux", prompt="a kite")
    call = only_create(emu)
    assert call.path == "/v1/predictions" and call.json["version"] == VERSION


def test_unsupported_output_format_is_refused(client: OpenAI, emu: ReplicateEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-kontext-pro", prompt="x", output_format="webp")
    assert error_of(exc)["param"] == "output_format"
    assert not creates(emu)


# ---- edits --------------------------------------------------------------------------------------


def test_kontext_edit_sends_input_image_and_keeps_its_shape(client: OpenAI, emu: ReplicateEmulator) -> None:
    ref = make_image(640, 480, "png", seed=4)
    r = client.images.edit(model="flux-kontext-pro", prompt="make it night", image=("a.png", ref, "image/png"),
                           response_format="b64_json")
    inp = only_create(emu).json["input"]
    assert base64.b64decode(inp["input_image"].removeprefix("data:image/png;base64,")) == ref
    assert inp["aspect_ratio"] == "match_input_image"
    assert size_of(r.data[0]) == (640, 480)


def test_kontext_takes_reference_urls_written_in_the_prompt(client: OpenAI, emu: ReplicateEmulator) -> None:
    url = emu.host_bytes(make_image(320, 240, "png", seed=5), "image/png")
    client.images.generate(model="flux-kontext-pro", prompt=f"make it snowy {url}")
    inp = only_create(emu).json["input"]
    assert inp["prompt"] == "make it snowy" and inp["input_image"].startswith("data:image/png;base64,")


def test_flux_dev_image_to_image_with_strength(client: OpenAI, emu: ReplicateEmulator) -> None:
    ref = make_image(512, 512, "png", seed=6)
    client.images.edit(model="flux-dev", prompt="watercolour", image=("a.png", ref, "image/png"),
                       extra_body={"strength": 0.6})
    inp = only_create(emu).json["input"]
    assert inp["image"].startswith("data:image/png;base64,") and inp["prompt_strength"] == 0.6


def data_uri(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


def test_kontext_dev_generation_sends_the_reference_as_input_image(client: OpenAI, emu: ReplicateEmulator) -> None:
    ref = make_image(640, 480, "png", seed=7)
    r = client.images.generate(model="flux-kontext-dev", prompt="make it autumn", response_format="b64_json",
                               extra_body={"image": [data_uri(ref)]})
    call = only_create(emu)
    assert call.path == "/v1/models/black-forest-labs/flux-kontext-dev/predictions"
    inp = call.json["input"]
    assert base64.b64decode(inp["input_image"].removeprefix("data:image/png;base64,")) == ref
    assert inp["aspect_ratio"] == "match_input_image" and "num_outputs" not in inp
    assert size_of(r.data[0]) == (640, 480)


def test_kontext_dev_edit_snaps_size_to_its_ratios(client: OpenAI, emu: ReplicateEmulator) -> None:
    ref = make_image(640, 480, "png", seed=8)
    r = client.images.edit(model="flux-kontext-dev", prompt="make it night", image=("a.png", ref, "image/png"),
                           size="1792x1024", output_format="webp")
    assert len(r.data) == 1
    inp = only_create(emu).json["input"]
    assert inp["aspect_ratio"] == "16:9" and inp["output_format"] == "webp"
    assert inp["input_image"].startswith("data:image/png;base64,")


def test_kontext_dev_without_a_reference_is_refused_naming_image(client: OpenAI, emu: ReplicateEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-kontext-dev", prompt="a lighthouse")
    assert error_of(exc)["param"] == "image"
    assert not emu.calls


def test_flux_1_1_pro_takes_one_image_prompt(client: OpenAI, emu: ReplicateEmulator) -> None:
    ref = make_image(320, 320, "png", seed=9)
    r = client.images.generate(model="flux-pro", prompt="in this composition", extra_body={"image": [data_uri(ref)]})
    assert len(r.data) == 1
    inp = only_create(emu).json["input"]
    assert base64.b64decode(inp["image_prompt"].removeprefix("data:image/png;base64,")) == ref
    assert "input_image" not in inp and "image" not in inp


def test_two_reference_images_are_refused(client: OpenAI, emu: ReplicateEmulator) -> None:
    png = make_image(64, 64, "png")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(model="flux-kontext-pro", prompt="x", image=[("a.png", png, "image/png")] * 2)
    assert error_of(exc)["param"] == "image"
    assert not creates(emu)


# ---- failures -----------------------------------------------------------------------------------


def test_failed_prediction_fails_with_its_error(client: OpenAI, emu: ReplicateEmulator) -> None:
    emu.fail_prediction("CUDA out of memory")
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-schnell", prompt="x")
    assert exc.value.status_code == 502 and "CUDA out of memory" in str(error_of(exc)["message"])


def test_nsfw_is_a_content_refusal_even_after_polling(client: OpenAI, emu: ReplicateEmulator) -> None:
    emu.duration = 1
    emu.nsfw()
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-schnell", prompt="x")
    err = error_of(exc)
    assert err["code"] == "content_policy_violation" and NSFW_ERROR in str(err["message"])
    assert polls(emu)


def test_invalid_input_422_is_a_400_with_the_detail(client: OpenAI, emu: ReplicateEmulator) -> None:
    emu.fail(Failure(status=422, body={"title": "Input validation failed", "status": 422,
                                       "detail": "- input.prompt: String length must be less than 5000"},
                     path="/predictions"))
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-schnell", prompt="x")
    err = error_of(exc)
    assert err["code"] == "upstream_rejected" and "String length must be" in str(err["message"])


def test_429_is_a_retryable_503_with_the_throttle_detail(client: OpenAI, emu: ReplicateEmulator) -> None:
    emu.fail(Failure(status=429, path="/predictions"))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-schnell", prompt="x")
    err = error_of(exc)
    assert exc.value.status_code == 503 and err["code"] == "upstream_rate_limited"
    assert "throttled" in str(err["message"])


def test_5xx_is_a_503(client: OpenAI, emu: ReplicateEmulator) -> None:
    emu.fail(Failure(status=500, path="/predictions"))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-schnell", prompt="x")
    assert exc.value.status_code == 503 and error_of(exc)["code"] == "upstream_unavailable"


def test_create_timeout_is_a_504(client: OpenAI, emu: ReplicateEmulator) -> None:
    emu.fail(Failure(status=201, delay=2.0, path="/predictions"))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-pro-1.1", prompt="x")
    assert exc.value.status_code == 504 and error_of(exc)["code"] == "upstream_timeout"


def test_malformed_answer_is_a_bad_response(client: OpenAI, emu: ReplicateEmulator) -> None:
    emu.fail(Failure(malformed=True, path="/predictions"))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-schnell", prompt="x")
    assert exc.value.status_code == 502 and error_of(exc)["code"] == "upstream_bad_response"
