"""POST /v1/chat/completions with image models, driven by the official ``openai`` client."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from tests.emulators.base import UploadedFile, make_image
from tests.surfaces.conftest import PRICE_MICROS, Surfaces

LINK = re.compile(r"!\[image\]\((\S+)\)")


@pytest.fixture
def client(env: Surfaces) -> Iterator[OpenAI]:
    with OpenAI(base_url=env.gw.url + "/v1", api_key=env.key, max_retries=0) as c:
        yield c


def links(content: str | None) -> list[str]:
    assert content is not None
    return LINK.findall(content)


def fetch_image(url: str) -> tuple[bytes, Image.Image]:
    resp = httpx.get(url)
    assert resp.status_code == 200, resp.text
    return resp.content, Image.open(io.BytesIO(resp.content))


def edit_uploads(env: Surfaces) -> list[UploadedFile]:
    edits = [c for c in env.openai.calls if c.path == "/v1/images/edits"]
    assert len(edits) == 1, [c.path for c in env.openai.calls]
    return list(edits[0].form["image[]"])


def test_completion_carries_the_image_as_a_gateway_link(env: Surfaces, client: OpenAI) -> None:
    answer = client.chat.completions.create(model="gpt-image-1", messages=[{"role": "user", "content": "a red fox"}])
    assert answer.object == "chat.completion" and answer.model == "gpt-image-1"
    choice = answer.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    [url] = links(choice.message.content)
    assert url.startswith(env.gw.url + "/files/")
    _, image = fetch_image(url)
    assert image.format == "PNG" and image.size == (1024, 1024)
    [call] = env.openai.calls
    assert call.path == "/v1/images/generations" and call.json["prompt"] == "a red fox"
    assert answer.usage is not None and answer.usage.total_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_image_parameters_ride_in_the_body_and_n_makes_choices(env: Surfaces, client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="gpt-image-1", messages=[{"role": "user", "content": "two foxes"}], n=2,
        extra_body={"aspect_ratio": "3:2", "quality": "low"})
    assert [c.index for c in answer.choices] == [0, 1]
    for choice in answer.choices:
        [url] = links(choice.message.content)
        assert fetch_image(url)[1].size == (1536, 1024)
    [call] = env.openai.calls
    assert call.json["n"] == 2 and call.json["size"] == "1536x1024" and call.json["quality"] == "low"


def test_stream_sends_role_content_finish_usage_and_done(env: Surfaces, client: OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-image-1", stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "a lighthouse"}])
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [url] = links(content)
    assert fetch_image(url)[1].size == (1024, 1024)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_stream_on_the_wire_is_sse_ending_with_done(env: Surfaces) -> None:
    body = {"model": "gpt-image-1", "stream": True, "messages": [{"role": "user", "content": "a kite"}]}
    with httpx.stream("POST", env.gw.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {env.key}"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode()
    events = [e for e in text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert "usage" not in text  # not asked for with stream_options


def test_slow_job_streams_the_role_first_and_the_image_later(env: Surfaces, client: OpenAI) -> None:
    env.openai.latency = 1.8  # longer than the gateway's early-failure window: the stream starts at once
    stream = client.chat.completions.create(model="gpt-image-1", stream=True,
                                            messages=[{"role": "user", "content": "a slow snail"}])
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant" and not first.choices[0].delta.content
    rest = list(stream)
    assert len(links("".join(c.choices[0].delta.content or "" for c in rest if c.choices))) == 1


def test_two_turn_refine_sends_the_first_image_as_reference(env: Surfaces, client: OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-image-1",
                                           messages=[{"role": "user", "content": "a meadow under a blue sky"}])
    first_content = first.choices[0].message.content
    [url] = links(first_content)
    first_bytes, _ = fetch_image(url)
    env.openai.reset()

    second = client.chat.completions.create(model="gpt-image-1", messages=[
        {"role": "user", "content": "a meadow under a blue sky"},
        {"role": "assistant", "content": first_content},
        {"role": "user", "content": "now make the sky purple"},
    ])
    [upload] = edit_uploads(env)
    assert upload.data == first_bytes
    [edit] = env.openai.calls
    assert edit.form["prompt"] == ["now make the sky purple"]
    [url2] = links(second.choices[0].message.content)
    assert url2 != url and fetch_image(url2)[0] != first_bytes


def test_image_url_parts_are_the_reference(env: Surfaces, client: OpenAI) -> None:
    photo = make_image(640, 480, "png", seed=7)
    data_uri = "data:image/png;base64," + base64.b64encode(photo).decode()
    client.chat.completions.create(model="gpt-image-1", messages=[
        {"role": "assistant", "content": "![image](data:image/png;base64,AAAA)"},  # the newer image wins
        {"role": "user", "content": [{"type": "text", "text": "turn this into a watercolour"},
                                     {"type": "image_url", "image_url": {"url": data_uri}}]},
    ])
    [upload] = edit_uploads(env)
    assert upload.data == photo


def test_refine_with_a_model_that_takes_no_reference_draws_anew(env: Surfaces, client: OpenAI) -> None:
    previous = "![image](data:image/png;base64," + base64.b64encode(make_image(64, 64)).decode() + ")"
    answer = client.chat.completions.create(model="dall-e-3", messages=[
        {"role": "user", "content": "a castle"}, {"role": "assistant", "content": previous},
        {"role": "user", "content": "a castle at night"}])
    assert len(links(answer.choices[0].message.content)) == 1
    [call] = env.openai.calls
    assert call.path == "/v1/images/generations" and call.json["prompt"] == "a castle at night"


def test_chat_served_model_gets_the_conversation_and_answers_with_gateway_links(
        env: Surfaces, client: OpenAI) -> None:
    messages = [{"role": "system", "content": "You draw."}, {"role": "user", "content": "a teapot"}]
    answer = client.chat.completions.create(model="gpt-4o-image", messages=messages)  # type: ignore[arg-type]
    [call] = [c for c in env.chat.calls if c.path == "/v1/chat/completions"]
    assert call.json["messages"] == messages and call.json["model"] == "gpt-4o-image"
    assert env.chat.url not in (answer.choices[0].message.content or "")  # upstream URLs expire
    urls = links(answer.choices[0].message.content)
    assert urls and all(u.startswith(env.gw.url + "/files/") for u in urls)
    assert fetch_image(urls[0])[1].size == (1024, 1024)


def test_refine_through_a_chat_served_model_sends_the_first_image_bytes(env: Surfaces, client: OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o-image", messages=[{"role": "user", "content": "a kite"}])
    first_content = first.choices[0].message.content
    [url] = links(first_content)
    first_bytes, _ = fetch_image(url)
    env.reset()
    client.chat.completions.create(model="gpt-4o-image", messages=[
        {"role": "user", "content": "a kite"}, {"role": "assistant", "content": first_content},
        {"role": "user", "content": "make it red"}])
    [call] = [c for c in env.chat.calls if c.path == "/v1/chat/completions"]
    sent = call.json["messages"]
    assert sent[:2] == [{"role": "user", "content": "a kite"}, {"role": "assistant", "content": first_content}]
    text, image = sent[2]["content"]
    assert text == {"type": "text", "text": "make it red"}
    # The upstream cannot be expected to reach this gateway's /files/ URL: it gets the bytes.
    prefix, data = image["image_url"]["url"].split(",", 1)
    assert prefix == "data:image/png;base64" and base64.b64decode(data) == first_bytes


def test_success_is_billed_once(env: Surfaces) -> None:
    key = env.funded_key()
    with OpenAI(base_url=env.gw.url + "/v1", api_key=key, max_retries=0) as c:
        c.chat.completions.create(model="gpt-image-1", messages=[{"role": "user", "content": "a coin"}])
    assert env.balance(key) == (1_000_000 - PRICE_MICROS, 0)


# ---- errors, in the OpenAI shape ----------------------------------------------------------------

def test_bad_key_is_401(env: Surfaces) -> None:
    with OpenAI(base_url=env.gw.url + "/v1", api_key="ig-wrong", max_retries=0) as c, \
            pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model="gpt-image-1", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


def test_a_text_model_is_model_not_found(env: Surfaces, client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
    assert info.value.code == "model_not_found"
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "model" and "image model" in body["message"]
    assert env.openai.calls == []


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "gpt-image-1"}, "messages"),
    ({"model": "gpt-image-1", "messages": []}, "messages"),
    ({"model": "gpt-image-1", "messages": [{"role": "user", "content": "   "}]}, "messages[0].content"),
    ({"model": "gpt-image-1", "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
    ({"model": "gpt-image-1", "messages": [{"role": "user", "content": "x"}], "n": 11}, "n"),
    ({"model": "gpt-image-1", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "input_audio", "input_audio": {}}]}]}, "messages[0].content[1].type"),
    ({"model": "gpt-image-1", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}]}]},
     "messages[0].content[1].image_url"),
])
def test_invalid_body_is_400_naming_the_param(env: Surfaces, body: dict[str, object], param: str) -> None:
    resp = httpx.post(env.gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {env.key}"})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert env.openai.calls == []


def test_non_json_body_is_400(env: Surfaces) -> None:
    resp = httpx.post(env.gw.url + "/v1/chat/completions", content=b"{nope",
                      headers={"Authorization": f"Bearer {env.key}", "Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_upstream_failure_is_mapped_and_not_billed(env: Surfaces) -> None:
    key = env.funded_key()
    env.openai.fail(status=500, times=5)
    with OpenAI(base_url=env.gw.url + "/v1", api_key=key, max_retries=0) as c:
        with pytest.raises(openai.InternalServerError) as info:
            c.chat.completions.create(model="gpt-image-1", messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 503 and info.value.code == "upstream_unavailable"
        # Streaming: an error that comes at once is still a real HTTP status.
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="gpt-image-1", stream=True, messages=[{"role": "user", "content": "x"}])
    assert env.balance(key) == (1_000_000, 0)


def test_upstream_failure_after_the_stream_started_is_an_error_event(env: Surfaces, client: OpenAI) -> None:
    env.openai.fail(status=500, delay=1.8, times=5)
    stream = client.chat.completions.create(model="gpt-image-1", stream=True,
                                            messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.APIError) as info:
        list(stream)
    assert "500" in info.value.message


def test_refusal_is_a_content_policy_error(env: Surfaces, client: OpenAI) -> None:
    env.openai.moderate()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-image-1", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 400


def test_gemini_model_through_chat_refines_with_the_first_image(env: Surfaces, client: OpenAI) -> None:
    first = client.chat.completions.create(model="nano-banana", messages=[{"role": "user", "content": "a boat"}],
                                           extra_body={"aspect_ratio": "16:9"})
    first_content = first.choices[0].message.content
    [url] = links(first_content)
    first_bytes, image = fetch_image(url)
    assert image.size == (1344, 768)
    assert "Here is the image you asked for." in (first_content or "")  # the model's own text comes along
    client.chat.completions.create(model="nano-banana", messages=[
        {"role": "user", "content": "a boat"}, {"role": "assistant", "content": first_content},
        {"role": "user", "content": "add a red sail"}])
    second = [c.json for c in env.gemini.calls if c.path.endswith(":generateContent")][-1]
    [turn] = second["contents"]
    inline = [p["inlineData"] for p in turn["parts"] if "inlineData" in p]
    assert [base64.b64decode(i["data"]) for i in inline] == [first_bytes]
    assert [p["text"] for p in turn["parts"] if "text" in p] == ["add a red sail"]


def test_google_model_name_maps_to_nano_banana_and_nulls_are_defaults(env: Surfaces) -> None:
    body = {"model": "gemini-2.5-flash-image-preview", "n": None, "stream": None, "temperature": 0.7,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a pear"}]}]}
    resp = httpx.post(env.gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {env.key}"})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["model"] == "gemini-2.5-flash-image-preview" and len(answer["choices"]) == 1
    assert len(links(answer["choices"][0]["message"]["content"])) == 1
    [call] = [c for c in env.gemini.calls if c.path.endswith(":generateContent")]
    assert call.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
