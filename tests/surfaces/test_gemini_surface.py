"""Gemini's native generateContent for every image model, driven by the official ``google-genai``.

google-genai 3.x builds ``{base_url}/{api_version}/models/{model}:generateContent`` with
``api_version`` ``v1`` by default (``GOOGLE_AI_API_DEFAULT_VERSION``) and ``v1beta`` when asked;
both are served.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from PIL import Image

from tests.emulators.base import make_image
from tests.surfaces.conftest import PRICE_MICROS, Surfaces

VERSIONS = ["v1", "v1beta"]
IMAGE_ONLY_16_9 = types.GenerateContentConfig(response_modalities=["IMAGE"],
                                              image_config=types.ImageConfig(aspect_ratio="16:9"))


def client_for(env: Surfaces, key: str | None = None, version: str = "v1") -> genai.Client:
    return genai.Client(api_key=key or env.key,
                        http_options=types.HttpOptions(base_url=env.gw.url, api_version=version))


@pytest.fixture(params=VERSIONS)
def client(env: Surfaces, request: pytest.FixtureRequest) -> Iterator[genai.Client]:
    with client_for(env, version=request.param) as c:
        yield c


def images_of(response: types.GenerateContentResponse) -> list[Image.Image]:
    out = []
    assert response.candidates
    for cand in response.candidates:
        assert cand.content is not None and cand.content.parts is not None
        for part in cand.content.parts:
            if part.inline_data is not None:
                assert part.inline_data.data is not None and part.inline_data.mime_type == "image/png"
                pil = Image.open(io.BytesIO(part.inline_data.data))
                helper = part.as_image()  # the client's own helper decodes the same bytes
                assert helper is not None and helper.image_bytes == part.inline_data.data
                out.append(pil)
    return out


def generate_calls(env: Surfaces) -> list[dict[str, object]]:
    return [c.json for c in env.gemini.calls if c.path.endswith(":generateContent")]


def test_client_defaults_work(env: Surfaces) -> None:
    """No ``api_version``: the installed google-genai picks its default (``v1`` in 3.x)."""
    with genai.Client(api_key=env.key, http_options=types.HttpOptions(base_url=env.gw.url)) as c:
        assert c._api_client._http_options.api_version == "v1"
        response = c.models.generate_content(model="nano-banana", contents="a pear")
    assert len(images_of(response)) == 1


def test_gemini_model_by_google_name_gets_the_contents_faithfully(env: Surfaces, client: genai.Client) -> None:
    picture = make_image(320, 240, "png", seed=3)
    contents = [
        types.Content(role="user", parts=[types.Part(text="a cat on a sofa")]),
        types.Content(role="model", parts=[types.Part(inline_data=types.Blob(data=picture, mime_type="image/png"))]),
        types.Content(role="user", parts=[types.Part(text="now make the cat purple")]),
    ]
    response = client.models.generate_content(model="gemini-2.5-flash-image", contents=contents,
                                              config=IMAGE_ONLY_16_9)
    [image] = images_of(response)
    assert image.size == (1344, 768)
    cand = response.candidates[0]  # type: ignore[index]
    assert cand.finish_reason == types.FinishReason.STOP and cand.index == 0
    assert all(p.text is None for p in cand.content.parts)  # type: ignore[union-attr]  # ["IMAGE"]: no text
    assert response.model_version == "nano-banana" and response.response_id
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.total_token_count
    assert usage.total_token_count == usage.prompt_token_count + (usage.candidates_token_count or 0)
    [sent] = generate_calls(env)
    b64 = base64.urlsafe_b64encode(picture).decode()  # what google-genai sends, passed on untouched
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "a cat on a sofa"}]},
        {"role": "model", "parts": [{"inlineData": {"data": b64, "mimeType": "image/png"}}]},
        {"role": "user", "parts": [{"text": "now make the cat purple"}]},
    ]
    assert sent["generationConfig"] == {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9"}}


def test_text_parts_accompany_images_when_asked(env: Surfaces, client: genai.Client) -> None:
    response = client.models.generate_content(
        model="nano-banana", contents="a robot",
        config=types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"]))
    parts = response.candidates[0].content.parts  # type: ignore[index,union-attr]
    assert parts is not None and parts[0].text == "Here is the image you asked for."
    assert len(images_of(response)) == 1


def test_non_gemini_model_through_generate_content(env: Surfaces, client: genai.Client) -> None:
    response = client.models.generate_content(model="gpt-image-1", contents=["a harbour at dawn"],
                                              config=IMAGE_ONLY_16_9)
    [image] = images_of(response)
    assert image.size == (1536, 1024)  # 16:9 snapped to the nearest size gpt-image-1 draws
    [call] = env.openai.calls
    assert call.path == "/v1/images/generations" and call.json["prompt"] == "a harbour at dawn"
    assert call.json["size"] == "1536x1024"
    assert response.model_version == "gpt-image-1"
    assert response.usage_metadata is not None and response.usage_metadata.total_token_count


@pytest.mark.parametrize("model", ["gpt-image-1", "nano-banana"])
def test_candidate_count_makes_n_candidates(env: Surfaces, model: str) -> None:
    with client_for(env) as c:
        response = c.models.generate_content(
            model=model, contents="two owls",
            config=types.GenerateContentConfig(candidate_count=2, response_modalities=["IMAGE"]))
    assert [c.index for c in response.candidates or []] == [0, 1]
    assert len(images_of(response)) == 2
    if model == "gpt-image-1":
        [call] = env.openai.calls
        assert call.json["n"] == 2
    else:  # Gemini draws one image per call: two calls, neither asking for candidates
        calls = generate_calls(env)
        assert len(calls) == 2 and all("candidateCount" not in c["generationConfig"] for c in calls)  # type: ignore[operator]


def test_non_gemini_refine_uses_the_model_turn_image(env: Surfaces, client: genai.Client) -> None:
    picture = make_image(512, 512, "png", seed=5)
    inline = types.Part(inline_data=types.Blob(data=picture, mime_type="image/png"))
    client.models.generate_content(model="gpt-image-1", contents=[
        types.Content(role="user", parts=[types.Part(text="a vase")]),
        types.Content(role="model", parts=[inline]),
        types.Content(role="user", parts=[types.Part(text="add tulips")]),
    ], config=types.GenerateContentConfig(response_modalities=["IMAGE"]))
    [call] = env.openai.calls
    assert call.path == "/v1/images/edits" and call.form["prompt"] == ["add tulips"]
    assert [u.data for u in call.form["image[]"]] == [picture]


def test_file_data_uri_is_fetched_as_reference(env: Surfaces, client: genai.Client) -> None:
    picture = make_image(300, 200, "jpeg", seed=9)
    url = env.openai.host_bytes(picture, "image/jpeg")
    client.models.generate_content(model="gpt-image-1", contents=[types.Content(role="user", parts=[
        types.Part(file_data=types.FileData(file_uri=url, mime_type="image/jpeg")),
        types.Part(text="make it a poster")])], config=types.GenerateContentConfig(response_modalities=["IMAGE"]))
    [edit] = [c for c in env.openai.calls if c.path == "/v1/images/edits"]
    assert [u.data for u in edit.form["image[]"]] == [picture]


def test_file_data_reaches_a_gemini_upstream_as_the_fetched_bytes(env: Surfaces, client: genai.Client) -> None:
    picture = make_image(300, 200, "png", seed=4)
    url = env.openai.host_bytes(picture, "image/png")
    client.models.generate_content(model="nano-banana", contents=[
        types.Content(role="user", parts=[types.Part(text="a boat")]),
        types.Content(role="model", parts=[types.Part(text="Here it is.")]),
        types.Content(role="user", parts=[types.Part(file_data=types.FileData(file_uri=url, mime_type="image/png")),
                                          types.Part(text="make it a poster")])],
        config=types.GenerateContentConfig(response_modalities=["IMAGE"]))
    [call] = [c.json for c in env.gemini.calls if c.path.endswith(":generateContent")]
    first, model_turn, last = call["contents"]
    assert first["parts"] == [{"text": "a boat"}] and model_turn["parts"] == [{"text": "Here it is."}]
    assert [p.get("text") for p in last["parts"]] == [None, "make it a poster"]
    assert base64.b64decode(last["parts"][0]["inlineData"]["data"]) == picture


def test_stream_for_gemini_and_non_gemini_models(env: Surfaces, client: genai.Client) -> None:
    for model, size in (("nano-banana", (1344, 768)), ("gpt-image-1", (1536, 1024))):
        chunks = list(client.models.generate_content_stream(
            model=model, contents="a paper boat",
            config=types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"],
                                               image_config=types.ImageConfig(aspect_ratio="16:9"))))
        images = [img for chunk in chunks for img in images_of(chunk) if chunk.candidates]
        assert [i.size for i in images] == [size]
        assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
        assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])  # type: ignore[index]
        assert chunks[-1].usage_metadata is not None and chunks[-1].usage_metadata.total_token_count
    parts = [p for c in chunks for p in c.candidates[0].content.parts]  # type: ignore[index,union-attr]
    assert [p.text for p in parts if p.text] == []  # gpt-image-1 writes no text


def test_stream_on_the_wire(env: Surfaces) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "a kite"}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}
    with httpx.stream("POST", env.gw.url + "/v1beta/models/nano-banana:streamGenerateContent?alt=sse",
                      json=body, headers={"x-goog-api-key": env.key}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode()
    events = [e for e in text.split("\r\n\r\n") if e.strip()]
    assert len(events) == 2 and all(e.startswith("data: {") for e in events)
    assert '"text":"Here is the image you asked for."' in events[0] and '"inlineData"' in events[1]


@pytest.mark.parametrize("how", ["bearer", "header", "query"])
def test_all_three_ways_of_sending_the_key(env: Surfaces, how: str) -> None:
    url = env.gw.url + "/v1beta/models/nano-banana:generateContent"
    headers = {"bearer": {"Authorization": f"Bearer {env.key}"}, "header": {"x-goog-api-key": env.key},
               "query": {}}[how]
    params = {"key": env.key} if how == "query" else {}
    resp = httpx.post(url, params=params, headers=headers,
                      json={"contents": [{"parts": [{"text": "a fox"}]}]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["candidates"][0]["content"]["parts"][-1]["inlineData"]["mimeType"] == "image/png"


def test_list_models_still_answers_get(env: Surfaces) -> None:
    resp = httpx.get(env.gw.url + "/v1/models", headers={"Authorization": f"Bearer {env.key}"})
    assert resp.status_code == 200 and "nano-banana" in {m["id"] for m in resp.json()["data"]}


# ---- refusals: a Google client expects a 200 that says why, and nothing is billed -----------------

def test_blocked_prompt_is_prompt_feedback_and_not_billed(env: Surfaces) -> None:
    key = env.funded_key()
    env.gemini.block_prompt("PROHIBITED_CONTENT", "Not allowed.")
    with client_for(env, key) as c:
        response = c.models.generate_content(model="nano-banana", contents="something forbidden")
    assert response.prompt_feedback is not None
    assert response.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    assert not response.candidates
    assert env.balance(key) == (1_000_000, 0)


@pytest.mark.parametrize(("upstream", "rendered"), [("IMAGE_SAFETY", "IMAGE_SAFETY"), ("NO_IMAGE", "NO_IMAGE"),
                                                    ("STOP", "NO_IMAGE")])
def test_no_image_is_a_candidate_with_the_finish_reason(env: Surfaces, upstream: str, rendered: str) -> None:
    key = env.funded_key()
    env.gemini.no_image(upstream)
    with client_for(env, key) as c:
        response = c.models.generate_content(model="nano-banana", contents="a dragon")
    [cand] = response.candidates or []
    assert cand.finish_reason == types.FinishReason(rendered)
    # The explanation is a text part (google-genai does not map finishMessage on the Gemini API).
    [part] = cand.content.parts  # type: ignore[union-attr]
    assert part.inline_data is None and part.text and "finishReason" in part.text
    assert env.balance(key) == (1_000_000, 0)


def test_no_image_on_the_wire_has_finish_message_and_no_text_when_image_only(env: Surfaces) -> None:
    env.gemini.no_image("IMAGE_SAFETY")
    resp = httpx.post(env.gw.url + "/v1beta/models/nano-banana:generateContent", headers={"x-goog-api-key": env.key},
                      json={"contents": [{"parts": [{"text": "x"}]}],
                            "generationConfig": {"responseModalities": ["IMAGE"]}})
    assert resp.status_code == 200
    [cand] = resp.json()["candidates"]
    assert cand["finishReason"] == "IMAGE_SAFETY" and cand["finishMessage"] and "content" not in cand


def test_refusal_while_streaming(env: Surfaces, client: genai.Client) -> None:
    env.gemini.no_image("IMAGE_SAFETY")
    [chunk] = list(client.models.generate_content_stream(model="nano-banana", contents="a dragon"))
    assert chunk.candidates and chunk.candidates[0].finish_reason == types.FinishReason.IMAGE_SAFETY


def test_success_is_billed(env: Surfaces) -> None:
    key = env.funded_key()
    with client_for(env, key) as c:
        c.models.generate_content(model="nano-banana", contents="a coin")
    assert env.balance(key) == (1_000_000 - PRICE_MICROS, 0)


# ---- errors, in Google's shape --------------------------------------------------------------------

def test_bad_key_is_401(env: Surfaces) -> None:
    with client_for(env, "ig-wrong") as c, pytest.raises(genai_errors.ClientError) as info:
        c.models.generate_content(model="nano-banana", contents="x")
    assert info.value.code == 401 and info.value.status == "UNAUTHENTICATED"


def test_unknown_model_is_404(env: Surfaces, client: genai.Client) -> None:
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-pro", contents="x")
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"
    assert "gemini-2.5-pro" in (info.value.message or "")


def test_unknown_method_is_404_in_google_shape(env: Surfaces) -> None:
    resp = httpx.post(env.gw.url + "/v1beta/models/nano-banana:countTokens", headers={"x-goog-api-key": env.key},
                      json={"contents": []})
    assert resp.status_code == 404
    assert resp.json()["error"]["status"] == "NOT_FOUND" and resp.json()["error"]["code"] == 404


@pytest.mark.parametrize(("body", "needle"), [
    ({"contents": []}, "contents"),
    ({"contents": [{"role": "user", "parts": [{"text": "  "}]}]}, "no text"),
    ({"contents": [{"role": "model", "parts": [{"text": "hi"}]}]}, "user turn"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseModalities": ["TEXT"]}}, "IMAGE"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 11}}, "candidateCount"),
    ({"contents": [{"parts": [{"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": "!!"}}]}]},
     "contents[0].parts[1].inlineData.data"),
    ({"contents": [{"parts": [{"text": "x"}, {"fileData": {"fileUri": "gs://bucket/a.png"}}]}]}, "fileData"),
    ({"contents": "nope"}, "contents"),
])
def test_invalid_body_is_400_in_google_shape(env: Surfaces, body: dict[str, object], needle: str) -> None:
    resp = httpx.post(env.gw.url + "/v1beta/models/nano-banana:generateContent",
                      headers={"x-goog-api-key": env.key}, json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"code", "message", "status", "details"}
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT" and needle in error["message"]
    assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.RequestInfo",
                                 "requestId": resp.headers["x-request-id"]}]
    assert generate_calls(env) == []


def test_empty_prompt_through_the_client_is_400(env: Surfaces, client: genai.Client) -> None:
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model="nano-banana", contents=[types.Content(
            role="user", parts=[types.Part(inline_data=types.Blob(data=make_image(8, 8), mime_type="image/png"))])])
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"


def test_upstream_failure_is_mapped_and_not_billed(env: Surfaces) -> None:
    key = env.funded_key()
    env.gemini.fail(status=500, times=5)
    with client_for(env, key) as c:
        with pytest.raises(genai_errors.ServerError) as info:
            c.models.generate_content(model="nano-banana", contents="x")
        assert info.value.code == 503 and info.value.status == "UNAVAILABLE"
        with pytest.raises(genai_errors.ServerError):
            list(c.models.generate_content_stream(model="nano-banana", contents="x"))
    assert env.balance(key) == (1_000_000, 0)


def test_upstream_failure_after_the_stream_started_is_an_error_chunk(env: Surfaces) -> None:
    env.gemini.fail(status=500, delay=1.8, times=5)  # longer than the window in which errors keep their status
    with client_for(env) as c, pytest.raises(genai_errors.APIError) as info:
        list(c.models.generate_content_stream(model="nano-banana", contents="x"))
    assert info.value.code == 503


def test_chat_served_model_through_generate_content(env: Surfaces, client: genai.Client) -> None:
    response = client.models.generate_content(model="gpt-4o-image", contents="a lamp")
    parts = response.candidates[0].content.parts  # type: ignore[index,union-attr]
    assert parts is not None
    assert [img.size for img in images_of(response)] == [(1024, 1024)]
    texts = [p.text for p in parts if p.text]
    assert all(env.chat.url not in t for t in texts)  # the upstream's own short-lived link is not echoed
    [call] = [c for c in env.chat.calls if c.path == "/v1/chat/completions"]
    assert call.json["messages"] == [{"role": "user", "content": "a lamp"}]
