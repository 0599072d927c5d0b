"""``openai-chat`` end to end: a real gateway, the chat-completions image emulator, and the
official ``openai`` client."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from imagegate.wire.chat import find_images
from tests.conftest import StartGateway
from tests.emulators.base import Failure, make_image
from tests.emulators.chat_image import REFUSAL, ChatImageEmulator
from tests.harness import GatewayProcess, channel
from tests.images import fetch_image as fetch

PATH = "/v1/chat/completions"


@pytest.fixture(scope="module")
def emu() -> Iterator[ChatImageEmulator]:
    with ChatImageEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: ChatImageEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    base = emu.url + "/v1"
    return module_gateway_factory({
        "channels": [
            channel("plain", "openai-chat", base, {"gpt-4o-image": "gpt-4o-image", "sora_image": "sora_image"}),
            # Some resellers only finish long jobs on a streamed connection.
            channel("streamed", "openai-chat", base, {"sora_image-vip": "sora_image-vip"},
                    options={"stream": True}),
            channel("slow", "openai-chat", base, {"gpt-4o-image-vip": "gpt-4o-image-vip"}, timeout=0.5),
        ],
        "local_model": False,
    })


@pytest.fixture(autouse=True)
def _reset(emu: ChatImageEmulator) -> None:
    emu.reset()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def error_of(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, object]:
    return dict(exc.value.response.json()["error"])


# ---- generation ---------------------------------------------------------------------------------


def test_generate_reads_the_markdown_image_and_serves_it(client: OpenAI, emu: ChatImageEmulator,
                                                         gw: GatewayProcess) -> None:
    r = client.images.generate(model="gpt-4o-image", prompt="a red fox in snow")
    assert len(r.data) == 1 and r.data[0].url and r.data[0].url.startswith(gw.url + "/files/")
    assert fetch(r.data[0].url).size == (1024, 1024)
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    (call,) = [c for c in emu.calls if c.path == PATH]
    assert call.headers["authorization"] == "Bearer test-upstream-key"
    assert call.json == {"model": "gpt-4o-image", "stream": False,
                         "messages": [{"role": "user", "content": "a red fox in snow"}]}


def test_data_uri_answer_becomes_plain_b64_json(client: OpenAI, emu: ChatImageEmulator) -> None:
    emu.mode = "data_uri"
    r = client.images.generate(model="sora_image", prompt="a teapot", response_format="b64_json")
    assert r.data[0].b64_json and not r.data[0].b64_json.startswith("data:")
    assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).format == "PNG"


def test_bare_image_url_in_the_text_is_downloaded(client: OpenAI, emu: ChatImageEmulator) -> None:
    emu.mode = "bare_url"
    r = client.images.generate(model="sora_image", prompt="a kite", response_format="b64_json")
    assert r.data[0].b64_json
    assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).size == (1024, 1024)


def test_n_fans_out_one_chat_call_per_image(client: OpenAI, emu: ChatImageEmulator) -> None:
    r = client.images.generate(model="gpt-4o-image", prompt="two boats", n=2)
    assert len(r.data) == 2
    assert len([c for c in emu.calls if c.path == PATH]) == 2


def test_streamed_answer_is_concatenated_and_usage_read(client: OpenAI, emu: ChatImageEmulator) -> None:
    r = client.images.generate(model="sora_image-vip", prompt="a castle at dusk")
    assert r.data[0].url and fetch(r.data[0].url).size == (1024, 1024)
    assert r.usage is not None and r.usage.output_tokens > 0
    (call,) = [c for c in emu.calls if c.path == PATH]
    assert call.json is not None
    assert call.json["stream"] is True and call.json["stream_options"] == {"include_usage": True}


def test_size_is_dropped_and_reported(gw: GatewayProcess) -> None:
    r = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {gw.key()}"},
                   json={"model": "gpt-4o-image", "prompt": "a dune", "size": "1536x1024"}, timeout=30)
    assert r.status_code == 200, r.text
    assert "size" in r.headers["x-imagegate-dropped-params"].split(",")


# ---- edits --------------------------------------------------------------------------------------


def test_edit_sends_prompt_and_reference_images_as_one_user_message(client: OpenAI,
                                                                    emu: ChatImageEmulator) -> None:
    first, second = make_image(640, 480, "png", seed=1), make_image(300, 300, "jpeg", seed=2)
    r = client.images.edit(model="gpt-4o-image", prompt="put the cat in a hat",
                           image=[("a.png", first, "image/png"), ("b.jpg", second, "image/jpeg")],
                           response_format="b64_json")
    assert r.data[0].b64_json
    # The emulator draws at the first reference's size: the answer carries what was produced.
    assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).size == (640, 480)
    (call,) = [c for c in emu.calls if c.path == PATH]
    assert call.json is not None
    (message,) = call.json["messages"]
    assert message["role"] == "user"
    text, img1, img2 = message["content"]
    assert text == {"type": "text", "text": "put the cat in a hat"}
    assert img1["type"] == img2["type"] == "image_url"
    assert base64.b64decode(img1["image_url"]["url"].removeprefix("data:image/png;base64,")) == first
    assert img2["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_a_mask_is_refused_naming_it(client: OpenAI) -> None:
    png = make_image(64, 64, "png")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(model="gpt-4o-image", prompt="x", image=("a.png", png, "image/png"),
                           mask=("m.png", make_image(64, 64, "png", transparent=True), "image/png"))
    assert error_of(exc)["param"] == "mask"


def test_more_than_four_reference_images_are_refused(client: OpenAI, emu: ChatImageEmulator) -> None:
    png = make_image(32, 32, "png")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(model="gpt-4o-image", prompt="x", image=[(f"{i}.png", png, "image/png") for i in range(5)])
    assert error_of(exc)["param"] == "image"
    assert not [c for c in emu.calls if c.path == PATH]


# ---- failures -----------------------------------------------------------------------------------


def test_refusal_text_is_a_content_policy_error(client: OpenAI, emu: ChatImageEmulator) -> None:
    emu.say(REFUSAL)
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="gpt-4o-image", prompt="something forbidden")
    err = error_of(exc)
    assert err["code"] == "content_policy_violation"
    assert "content policy" in str(err["message"])


def test_answer_without_image_fails_with_the_models_words(client: OpenAI, emu: ChatImageEmulator) -> None:
    emu.say("I would love to help! Could you describe the scene in more detail?")
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="gpt-4o-image", prompt="hm")
    assert exc.value.status_code == 502
    err = error_of(exc)
    assert err["code"] == "no_image"
    assert "describe the scene" in str(err["message"])


def test_streamed_answer_without_image_fails_too(client: OpenAI, emu: ChatImageEmulator) -> None:
    emu.say("Sorry, the queue is full.")
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="sora_image-vip", prompt="hm")
    assert error_of(exc)["code"] == "no_image"


def test_upstream_429_is_a_retryable_503(client: OpenAI, emu: ChatImageEmulator) -> None:
    emu.fail(Failure(status=429, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="gpt-4o-image", prompt="x")
    assert exc.value.status_code == 503
    assert error_of(exc)["code"] == "upstream_rate_limited"


def test_upstream_500_is_a_503(client: OpenAI, emu: ChatImageEmulator) -> None:
    emu.fail(Failure(status=500, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="gpt-4o-image", prompt="x")
    assert exc.value.status_code == 503
    assert error_of(exc)["code"] == "upstream_unavailable"


def test_upstream_timeout_is_a_504(client: OpenAI, emu: ChatImageEmulator) -> None:
    emu.fail(Failure(status=200, delay=2.0, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="gpt-4o-image-vip", prompt="x")
    assert exc.value.status_code == 504
    assert error_of(exc)["code"] == "upstream_timeout"


def test_malformed_answer_is_a_bad_response(client: OpenAI, emu: ChatImageEmulator) -> None:
    emu.fail(Failure(malformed=True, path=PATH))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="gpt-4o-image", prompt="x")
    assert exc.value.status_code == 502
    assert error_of(exc)["code"] == "upstream_bad_response"


def test_rejected_request_is_a_400_not_retried(client: OpenAI, emu: ChatImageEmulator) -> None:
    emu.fail(Failure(status=400, body={"error": {"message": "Invalid 'messages'.", "type": "invalid_request_error",
                                                 "param": "messages", "code": None}}, path=PATH))
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="gpt-4o-image", prompt="x")
    assert error_of(exc)["code"] == "upstream_rejected"
    assert len([c for c in emu.calls if c.path == PATH]) == 1


def test_chat_surface_conversation_is_sent_faithfully(gw: GatewayProcess, emu: ChatImageEmulator) -> None:
    messages = [{"role": "system", "content": "You draw pictures."},
                {"role": "user", "content": "a paper boat"},
                {"role": "assistant", "content": "Which colour?"},
                {"role": "user", "content": [{"type": "text", "text": "a red paper boat"}]}]
    chat = OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)
    r = chat.chat.completions.create(model="gpt-4o-image", messages=messages)  # type: ignore[arg-type]
    assert r.choices[0].message.content and gw.url + "/files/" in r.choices[0].message.content
    (call,) = [c for c in emu.calls if c.path == PATH]
    assert call.json is not None and call.json["messages"] == messages


@pytest.mark.parametrize(("text", "found"), [
    ('![a](https://x.example/1.png "title") [download](https://x.example/1.png) ![b](<https://x.example/2.webp>)',
     ["https://x.example/1.png", "https://x.example/2.webp"]),
    ("![img](https://x.example/1.png) and https://x.example/other.png", ["https://x.example/1.png"]),
    ("see https://x.example/pic.JPG?sig=1, or https://x.example/page.html", ["https://x.example/pic.JPG?sig=1"]),
    ("inline data:image/png;base64,iVBORw0K= end", ["data:image/png;base64,iVBORw0K="]),
    ("no picture, just https://x.example/page", []),
])
def test_find_images(text: str, found: list[str]) -> None:
    assert find_images(text) == found
