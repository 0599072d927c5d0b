"""``?async=true&webhook=`` on the chat and Gemini surfaces too: a chat-only or Gemini-only
client fires and forgets, and reads the finished task in its own protocol (GET and webhook)."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx2 as httpx
from google.genai import types
from openai import OpenAI
from openai.types.chat import ChatCompletion
from PIL import Image

from tests.images import fetch_image
from tests.surfaces.conftest import PRICE_MICROS, Surfaces


def wait_done(s: Surfaces, key: str, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = httpx.get(f"{s.gw.url}/v1/images/tasks/{task_id}", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        task: dict[str, Any] = r.json()["data"]
        if task["status"] != "IN_PROGRESS":
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


def test_chat_async_reads_back_as_a_chat_completion(env: Surfaces) -> None:
    key = env.funded_key()
    client = OpenAI(base_url=env.gw.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="nano-banana", messages=[{"role": "user", "content": "a lighthouse"}], extra_query={"async": "true"})
    accepted = raw.http_response.json()
    task = wait_done(env, key, accepted["task_id"])
    assert task["status"] == "SUCCESS", task
    completion = ChatCompletion.model_validate(task["data"])  # the official client's own type
    assert completion.object == "chat.completion" and completion.model == "nano-banana"
    content = completion.choices[0].message.content or ""
    assert fetch_image(content.split("](", 1)[1].rstrip(")")).size[0] > 0
    assert env.balance(key) == (1_000_000 - PRICE_MICROS, 0)


def test_gemini_async_reads_back_as_a_generate_content_response(env: Surfaces) -> None:
    key = env.funded_key()
    r = httpx.post(f"{env.gw.url}/v1beta/models/gpt-image-1:generateContent", params={"async": "true"},
                   headers={"x-goog-api-key": key},
                   json={"contents": [{"role": "user", "parts": [{"text": "a meadow"}]}]})
    assert r.status_code == 200, r.text
    task = wait_done(env, key, r.json()["task_id"])
    assert task["status"] == "SUCCESS", task
    response = types.GenerateContentResponse.model_validate(task["data"])
    part = response.candidates[0].content.parts[-1]  # type: ignore[index,union-attr]
    assert part.inline_data is not None and part.inline_data.mime_type == "image/png"
    assert Image.open(io.BytesIO(part.inline_data.data or b"")).size[0] > 0


def test_async_and_streaming_do_not_mix(env: Surfaces) -> None:
    key = env.funded_key()
    r = httpx.post(f"{env.gw.url}/v1/chat/completions", params={"async": "true"},
                   headers={"Authorization": f"Bearer {key}"},
                   json={"model": "nano-banana", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "async"
    r = httpx.post(f"{env.gw.url}/v1beta/models/nano-banana:streamGenerateContent",
                   params={"async": "true", "alt": "sse"}, headers={"x-goog-api-key": key},
                   json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
    assert r.status_code == 400 and "async" in r.json()["error"]["message"]
    assert len(env.gemini.calls) == 0
