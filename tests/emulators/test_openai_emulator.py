"""The OpenAI emulator is faithful (the official SDK works against it) and strict (it refuses what the spec forbids)."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from openai import OpenAI
from PIL import Image

from tests.emulators.base import Failure, UploadedFile, make_image
from tests.emulators.openai import OpenAIEmulator, schema_validator

# -- helpers -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> dict[str, Any]:
        """The `error` object, after checking the body against the spec's `ErrorResponse`."""
        body: dict[str, Any] = self.json()
        assert not list(schema_validator("ErrorResponse").iter_errors(body))
        error: dict[str, Any] = body["error"]
        return error


def request(
    emulator: OpenAIEmulator,
    path: str,
    body: dict[str, Any] | bytes | None = None,
    *,
    content_type: str = "application/json",
    key: str | None = "",
    timeout: float = 10,
) -> Reply:
    """A raw request; `key=""` sends the emulator's own key, `key=None` no Authorization at all."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": content_type} if data is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key or emulator.api_key}"
    raw = urllib.request.Request(emulator.url + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(raw, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, dict(error.headers), error.read())


def multipart(fields: list[tuple[str, str | tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    """Encode form fields; a tuple value is a file (filename, data, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields:
        if isinstance(value, tuple):
            filename, data, content_type = value
            head = f'name="{name}"; filename="{filename}"\r\nContent-Type: {content_type}'
        else:
            head, data = f'name="{name}"', value.encode()
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; {head}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Picture:
    format: str | None
    size: tuple[int, int]
    mode: str


def picture(data: bytes) -> Picture:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return Picture(image.format, image.size, image.mode)


def b64_picture(b64: str | None) -> Picture:
    assert b64 is not None
    return picture(base64.b64decode(b64))


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: bytes = response.read()
        return data


def assert_images_response(body: dict[str, Any]) -> None:
    errors = [error.message for error in schema_validator("ImagesResponse").iter_errors(body)]
    assert not errors


def png_file(name: str, width: int, height: int, *, transparent: bool = False) -> tuple[str, bytes, str]:
    return name, make_image(width, height, "png", transparent=transparent), "image/png"


# -- generations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "output_format", "expected"),
    [("1536x1024", "webp", (1536, 1024)), ("1024x1536", "jpeg", (1024, 1536)), ("auto", "png", (1024, 1024))],
)
def test_gpt_image_generation_returns_base64_of_the_requested_size_and_format(
    openai_client: OpenAI, size: Any, output_format: Any, expected: tuple[int, int]
) -> None:
    result = openai_client.images.generate(
        model="gpt-image-1", prompt="a sea otter", size=size, output_format=output_format, quality="low"
    )

    assert result.data and result.data[0].url is None
    image = b64_picture(result.data[0].b64_json)
    assert image.size == expected
    assert image.format == output_format.upper()
    assert (result.size, result.quality, result.output_format) == (f"{expected[0]}x{expected[1]}", "low", output_format)
    assert result.usage is not None and result.usage.output_tokens > 0
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    assert_images_response(result.model_dump(exclude_none=True))


def test_dalle3_generation_answers_a_hosted_url_and_a_revised_prompt(
    openai_client: OpenAI, openai_emulator: OpenAIEmulator
) -> None:
    result = openai_client.images.generate(
        model="dall-e-3", prompt="a lighthouse", size="1792x1024", quality="hd", style="natural"
    )

    assert result.data and result.data[0].url and result.data[0].b64_json is None
    assert result.data[0].url.startswith(openai_emulator.url)
    assert result.data[0].revised_prompt
    assert result.usage is None
    image = picture(download(result.data[0].url))
    assert (image.format, image.size) == ("PNG", (1792, 1024))
    assert_images_response(result.model_dump(exclude_none=True))


def test_dalle2_generation_answers_base64_when_asked(openai_client: OpenAI) -> None:
    result = openai_client.images.generate(
        model="dall-e-2", prompt="a kite", size="256x256", n=2, response_format="b64_json"
    )

    assert result.data and len(result.data) == 2
    assert {b64_picture(item.b64_json).size for item in result.data} == {(256, 256)}
    assert result.data[0].b64_json != result.data[1].b64_json
    assert result.data[0].revised_prompt is None


def test_model_defaults_to_dalle2_and_nulls_are_accepted(openai_emulator: OpenAIEmulator) -> None:
    reply = request(openai_emulator, "/v1/images/generations", {"prompt": "a cat", "n": None, "style": None})

    assert reply.status == 200, reply.body
    [item] = reply.json()["data"]
    assert picture(download(item["url"])).size == (1024, 1024)


def test_stream_false_is_accepted_by_dalle(openai_emulator: OpenAIEmulator) -> None:
    body = {"model": "dall-e-2", "prompt": "a cat", "size": "256x256", "stream": False, "response_format": "b64_json"}
    reply = request(openai_emulator, "/v1/images/generations", body)

    assert reply.status == 200, reply.body


def test_gpt_image_2_accepts_custom_sizes_within_its_limits(openai_emulator: OpenAIEmulator) -> None:
    body = {"model": "gpt-image-2", "prompt": "a bridge", "size": "1536x864", "output_format": "jpeg"}
    reply = request(openai_emulator, "/v1/images/generations", body)

    assert reply.status == 200, reply.body
    assert b64_picture(reply.json()["data"][0]["b64_json"]).size == (1536, 864)


def test_transparent_background_yields_an_alpha_channel(openai_client: OpenAI) -> None:
    result = openai_client.images.generate(
        model="gpt-image-1.5", prompt="a sticker", background="transparent", output_format="png"
    )

    assert result.background == "transparent"
    assert result.data is not None and b64_picture(result.data[0].b64_json).mode == "RGBA"


def test_streaming_sends_partial_images_then_the_completed_one(openai_client: OpenAI) -> None:
    stream = openai_client.images.generate(
        model="gpt-image-1", prompt="a fox", stream=True, partial_images=2, size="1024x1536"
    )

    events = list(stream)
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert b64_picture(events[-1].b64_json).size == (1024, 1536)


# -- edits ---------------------------------------------------------------------------------------


def test_edit_takes_two_images_and_a_mask_as_the_sdk_sends_them(
    openai_client: OpenAI, openai_emulator: OpenAIEmulator
) -> None:
    first, second = png_file("room.png", 512, 512), ("lamp.jpg", make_image(300, 200, "jpeg"), "image/jpeg")
    mask = png_file("mask.png", 512, 512, transparent=True)

    result = openai_client.images.edit(
        model="gpt-image-1", prompt="add the lamp", image=[first, second], mask=mask, size="1536x1024"
    )

    assert result.data is not None and b64_picture(result.data[0].b64_json).size == (1536, 1024)
    assert result.usage is not None and result.usage.input_tokens_details.image_tokens > 0
    form = openai_emulator.calls[-1].form
    uploads = form["image[]"]
    assert [upload.filename for upload in uploads] == ["room.png", "lamp.jpg"]
    assert all(isinstance(upload, UploadedFile) for upload in [*uploads, *form["mask"]])
    assert form["prompt"] == ["add the lamp"]


def test_dalle2_edit_takes_one_square_png_and_answers_a_url(openai_client: OpenAI) -> None:
    result = openai_client.images.edit(
        model="dall-e-2", prompt="make it night", image=png_file("day.png", 256, 256), size="512x512"
    )

    assert result.data and result.data[0].url
    assert picture(download(result.data[0].url)).size == (512, 512)


def test_json_edit_takes_data_url_references(openai_emulator: OpenAIEmulator) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(make_image(64, 64)).decode()
    body = {"model": "gpt-image-1.5", "prompt": "recolor", "images": [{"image_url": data_url}], "n": 1}

    reply = request(openai_emulator, "/v1/images/edits", body)

    assert reply.status == 200, reply.body
    assert b64_picture(reply.json()["data"][0]["b64_json"]).size == (1024, 1024)


@pytest.mark.parametrize(
    ("model", "images", "mask", "param"),
    [
        ("gpt-image-1", [png_file("a.png", 512, 512)], png_file("m.png", 256, 256, transparent=True), "mask"),
        ("gpt-image-1", [png_file("a.png", 512, 512)], png_file("m.png", 512, 512), "mask"),  # no alpha
        ("dall-e-2", [png_file("a.png", 512, 256)], None, "image"),  # not square
        ("dall-e-2", [png_file("a.png", 256, 256), png_file("b.png", 256, 256)], None, "image"),
        ("dall-e-2", [("a.jpg", make_image(256, 256, "jpeg"), "image/jpeg")], None, "image"),
        ("gpt-image-1", [("a.png", b"not an image", "image/png")], None, "image"),
        ("dall-e-3", [png_file("a.png", 256, 256)], None, "model"),  # dall-e-3 cannot edit
    ],
)
def test_edit_refuses_images_the_model_cannot_take(
    openai_client: OpenAI, model: str, images: list[Any], mask: Any, param: str
) -> None:
    extra = {"mask": mask} if mask else {}
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.images.edit(model=model, prompt="edit", image=images, **extra)

    assert refused.value.param == param


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ([("prompt", "no image")], "image", "missing_required_parameter"),
        ([("image", png_file("a.png", 64, 64)), ("prompt", "x"), ("n", "two")], "n", "invalid_type"),
        ([("image", png_file("a.png", 64, 64)), ("prompt", "x"), ("n", "17")], "n", "integer_above_max_value"),
        ([("image", png_file("a.png", 64, 64)), ("prompt", "x"), ("quality", "hd")], "quality", "invalid_value"),
        ([("image", "text, not a file"), ("prompt", "x")], "image", "invalid_type"),
        ([("image", png_file("a.png", 64, 64)), ("prompt", "x"), ("colour", "red")], "colour", "unknown_parameter"),
        (
            [
                ("image", png_file("a.png", 64, 64)),
                ("prompt", "x"),
                ("model", "gpt-image-1-mini"),
                ("input_fidelity", "high"),
            ],
            "input_fidelity",
            "unsupported_parameter",
        ),
        (
            [("image", png_file("a.png", 64, 64)), ("prompt", "x"), ("moderation", "low")],
            "moderation",
            "unknown_parameter",
        ),
    ],
)
def test_multipart_edit_is_validated_against_the_spec(
    openai_emulator: OpenAIEmulator, fields: Any, param: str, code: str
) -> None:
    body, content_type = multipart(fields)

    reply = request(openai_emulator, "/v1/images/edits", body, content_type=content_type)

    assert reply.status == 400
    error = reply.error()
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


# -- invalid generations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "gpt-image-1", "prompt": "x", "quality": "ultra"}, "quality", "invalid_value"),
        ({"model": "gpt-image-1", "prompt": "x", "background": "glass"}, "background", "invalid_value"),
        ({"model": "gpt-image-1", "prompt": "x", "n": 11}, "n", "integer_above_max_value"),
        ({"model": "gpt-image-1", "prompt": "x", "n": 0}, "n", "integer_below_min_value"),
        ({"model": "gpt-image-1", "prompt": "x", "n": "2"}, "n", "invalid_type"),
        ({"model": "gpt-image-1"}, "prompt", "missing_required_parameter"),
        ({"model": "gpt-image-1", "prompt": "x", "seed": 3}, "seed", "unknown_parameter"),
        ({"model": "dall-e-3", "prompt": "x", "n": 2}, "n", "integer_above_max_value"),
        ({"model": "dall-e-3", "prompt": "x", "size": "512x512"}, "size", "invalid_value"),
        ({"model": "dall-e-3", "prompt": "x", "quality": "high"}, "quality", "invalid_value"),
        ({"model": "dall-e-3", "prompt": "x" * 4001}, "prompt", "string_above_max_length"),
        ({"model": "dall-e-3", "prompt": "x", "output_format": "webp"}, "output_format", "unsupported_parameter"),
        ({"model": "dall-e-2", "prompt": "x" * 1001}, "prompt", "string_above_max_length"),
        ({"model": "dall-e-2", "prompt": "x", "size": "1792x1024"}, "size", "invalid_value"),
        ({"model": "dall-e-2", "prompt": "x", "quality": "hd"}, "quality", "invalid_value"),
        ({"model": "gpt-image-1", "prompt": "x", "size": "1792x1024"}, "size", "invalid_value"),
        ({"model": "gpt-image-1", "prompt": "x", "quality": "hd"}, "quality", "invalid_value"),
        ({"model": "gpt-image-1", "prompt": "x", "response_format": "url"}, "response_format", "unsupported_parameter"),
        ({"model": "gpt-image-1", "prompt": "x", "style": "vivid"}, "style", "unsupported_parameter"),
        ({"model": "gpt-image-1", "prompt": "x" * 32001}, "prompt", "string_above_max_length"),
        (
            {"model": "gpt-image-1", "prompt": "x", "output_format": "jpeg", "background": "transparent"},
            "background",
            "invalid_value",
        ),
        ({"model": "gpt-image-1", "prompt": "x", "output_compression": 50}, "output_compression", None),
        (
            {"model": "gpt-image-1", "prompt": "x", "output_format": "jpeg", "output_compression": 101},
            "output_compression",
            None,
        ),
        ({"model": "gpt-image-2", "prompt": "x", "size": "1000x1000"}, "size", "invalid_value"),
        ({"model": "gpt-image-2", "prompt": "x", "size": "3840x1024"}, "size", "invalid_value"),  # wider than 3:1
        ({"model": "dall-e-4", "prompt": "x"}, "model", "invalid_value"),
    ],
)
def test_generation_refuses_what_the_spec_forbids(
    openai_emulator: OpenAIEmulator, body: dict[str, Any], param: str, code: str
) -> None:
    reply = request(openai_emulator, "/v1/images/generations", body)

    assert reply.status == 400
    error = reply.error()
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert param in error["message"] or code == "invalid_value"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-image-1", "prompt": "x", "images": []}, "images"),
        ({"model": "gpt-image-1", "prompt": "x", "images": [{"image_url": "https://example.com/a.png"}]}, "images"),
        (
            {"model": "gpt-image-1", "prompt": "x", "images": [{"file_id": "file-1", "image_url": "data:,"}]},
            "images[0]",
        ),
        ({"model": "dall-e-2", "prompt": "x", "images": [{"image_url": "data:image/png;base64,AAAA"}]}, "model"),
    ],
)
def test_json_edit_is_validated_against_the_spec(
    openai_emulator: OpenAIEmulator, body: dict[str, Any], param: str
) -> None:
    reply = request(openai_emulator, "/v1/images/edits", body)

    assert reply.status == 400
    assert reply.error()["param"] == param


def test_unparseable_json_is_refused(openai_emulator: OpenAIEmulator) -> None:
    reply = request(openai_emulator, "/v1/images/generations", b"{not json")

    assert reply.status == 400
    assert reply.error()["type"] == "invalid_request_error"


@pytest.mark.parametrize(("key", "code"), [("wrong-key", "invalid_api_key"), (None, None)])
def test_a_bad_or_missing_key_is_refused_and_still_recorded(
    openai_emulator: OpenAIEmulator, key: str | None, code: str | None
) -> None:
    reply = request(openai_emulator, "/v1/images/generations", {"prompt": "x"}, key=key)

    assert reply.status == 401
    assert reply.error()["code"] == code
    assert [call.path for call in openai_emulator.calls] == ["/v1/images/generations"]


def test_the_sdk_raises_authentication_error_on_a_bad_key(openai_emulator: OpenAIEmulator) -> None:
    with (
        OpenAI(base_url=f"{openai_emulator.url}/v1", api_key="sk-wrong", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.images.generate(model="gpt-image-1", prompt="x")


# -- scripted failures, latency and recording ----------------------------------------------------


def test_scripted_failures_are_served_in_order_then_normal_answers_resume(openai_emulator: OpenAIEmulator) -> None:
    openai_emulator.fail(status=429, headers={"Retry-After": "2"}, times=2)
    openai_emulator.fail(Failure(status=503, body="upstream overloaded"))
    body = {"model": "gpt-image-1", "prompt": "x", "quality": "low"}

    replies = [request(openai_emulator, "/v1/images/generations", body) for _ in range(4)]

    assert [reply.status for reply in replies] == [429, 429, 503, 200]
    assert replies[0].headers["Retry-After"] == "2"
    assert replies[0].error()["code"] == "rate_limit_exceeded"
    assert replies[2].body == b"upstream overloaded"
    assert len(openai_emulator.calls) == 4


def test_a_failure_with_a_path_only_hits_matching_requests(openai_emulator: OpenAIEmulator) -> None:
    openai_emulator.fail(status=500, path="/edits")

    assert request(openai_emulator, "/v1/models").status == 200
    body, content_type = multipart([("image", png_file("a.png", 64, 64)), ("prompt", "x")])
    reply = request(openai_emulator, "/v1/images/edits", body, content_type=content_type)
    assert reply.status == 500
    assert reply.error()["type"] == "server_error"


def test_failures_spare_hosted_files_unless_aimed_at_them(openai_emulator: OpenAIEmulator) -> None:
    url = openai_emulator.host_bytes(make_image(32, 32), "image/png")
    path = url.removeprefix(openai_emulator.url)
    openai_emulator.fail(status=500)
    openai_emulator.fail(status=502, path="/_files/")

    assert request(openai_emulator, path).status == 502  # the first failure skips /_files/, the second hits
    assert picture(download(url)).size == (32, 32)
    assert request(openai_emulator, "/v1/models").status == 500


def test_a_delayed_failure_outlasts_a_client_timeout(openai_emulator: OpenAIEmulator) -> None:
    openai_emulator.fail(delay=2.0)

    started = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        request(openai_emulator, "/v1/images/generations", {"prompt": "x"}, timeout=0.3)
    assert time.monotonic() - started < 1.5


def test_a_malformed_answer_is_a_200_that_does_not_parse(openai_emulator: OpenAIEmulator) -> None:
    openai_emulator.fail(malformed=True)

    reply = request(openai_emulator, "/v1/images/generations", {"prompt": "x"})

    assert reply.status == 200
    with pytest.raises(json.JSONDecodeError):
        reply.json()


def test_moderate_refuses_like_the_safety_system(openai_client: OpenAI, openai_emulator: OpenAIEmulator) -> None:
    openai_emulator.moderate()

    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.images.generate(model="gpt-image-1", prompt="something forbidden")
    assert refused.value.code == "moderation_blocked"
    assert openai_client.images.generate(model="gpt-image-1", prompt="a tree", quality="low").data


def test_latency_delays_every_answer(openai_emulator: OpenAIEmulator) -> None:
    openai_emulator.latency = 0.3

    started = time.monotonic()
    assert request(openai_emulator, "/v1/models").status == 200
    assert time.monotonic() - started >= 0.3


def test_requests_are_recorded_with_headers_query_and_body(openai_emulator: OpenAIEmulator) -> None:
    body = {"model": "gpt-image-1", "prompt": "a boat", "quality": "low"}

    request(openai_emulator, "/v1/images/generations?trace=1", body)

    [call] = openai_emulator.calls
    assert (call.method, call.path, call.query) == ("POST", "/v1/images/generations", {"trace": "1"})
    assert call.headers["authorization"] == f"Bearer {openai_emulator.api_key}"
    assert call.json == body and json.loads(call.body) == body


def test_concurrent_requests_are_all_answered_and_recorded(openai_emulator: OpenAIEmulator) -> None:
    body = {"model": "gpt-image-1", "prompt": "x", "quality": "low"}
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: request(openai_emulator, "/v1/images/generations", body), range(16)))

    assert {reply.status for reply in replies} == {200}
    assert len(openai_emulator.calls) == 16


def test_models_and_unknown_routes(openai_client: OpenAI, openai_emulator: OpenAIEmulator) -> None:
    assert {"gpt-image-1", "dall-e-3"} <= {model.id for model in openai_client.models.list()}
    assert request(openai_emulator, "/v1/nothing-here").error()["message"] == "Not Found"
    assert request(openai_emulator, "/_files/missing.png").status == 404


def test_an_emulator_stops_cleanly_and_frees_its_port() -> None:
    with OpenAIEmulator(api_key="k") as emulator:
        host, port = "127.0.0.1", int(emulator.url.rsplit(":", 1)[1])
        assert request(emulator, "/v1/models", key="k").status == 200

    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), timeout=1):
        pass


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_make_image_encodes_real_pictures(fmt: str) -> None:
    image = picture(make_image(1536, 1024, fmt, seed=3))

    assert (image.format, image.size) == (fmt.upper(), (1536, 1024))
