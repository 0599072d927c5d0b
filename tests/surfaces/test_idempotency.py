"""``Idempotency-Key`` on every surface: a repeat replays the first answer without reaching the
upstream or the ledger; concurrent repeats wait for the first; another body is a 409; a 5xx may
be retried; keys are per account."""

from __future__ import annotations

import concurrent.futures
import uuid
from typing import Any

import httpx2 as httpx
from google import genai
from google.genai import types
from openai import OpenAI

from tests.emulators.base import make_image
from tests.surfaces.conftest import PRICE_MICROS, Surfaces


def post(s: Surfaces, path: str, key: str, idem: str, **kw: Any) -> httpx.Response:
    return httpx.post(s.gw.url + path, headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem},
                      timeout=30, **kw)


def new_key() -> str:
    return f"test-{uuid.uuid4().hex}"


def test_replay_does_not_reach_upstream_or_ledger(env: Surfaces) -> None:
    key = env.funded_key()
    idem = new_key()
    body = {"model": "gpt-image-1", "prompt": "a lighthouse", "response_format": "url"}
    first = post(env, "/v1/images/generations", key, idem, json=body)
    assert first.status_code == 200, first.text
    assert env.balance(key) == (1_000_000 - PRICE_MICROS, 0)
    again = post(env, "/v1/images/generations", key, idem, json=body)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    url1, url2 = first.json()["data"][0]["url"], again.json()["data"][0]["url"]
    assert url1.split("?")[0] == url2.split("?")[0]  # the same stored image, its URL signed anew
    assert httpx.get(url2).content == httpx.get(url1).content
    assert len(env.openai.calls) == 1
    assert env.balance(key) == (1_000_000 - PRICE_MICROS, 0)  # charged once


def test_same_key_other_body_is_409_and_keys_are_per_account(env: Surfaces) -> None:
    key = env.funded_key()
    idem = new_key()
    assert post(env, "/v1/images/generations", key, idem,
                json={"model": "gpt-image-1", "prompt": "a"}).status_code == 200
    r = post(env, "/v1/images/generations", key, idem, json={"model": "gpt-image-1", "prompt": "b"})
    assert r.status_code == 409
    assert r.json()["error"]["param"] == "Idempotency-Key"
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    other = env.funded_key()  # another account's same key is its own request
    r = post(env, "/v1/images/generations", other, idem, json={"model": "gpt-image-1", "prompt": "b"})
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    assert len(env.openai.calls) == 2
    bad = post(env, "/v1/images/generations", key, "x" * 300, json={"model": "gpt-image-1", "prompt": "a"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"


def test_concurrent_duplicates_wait_for_the_first(env: Surfaces) -> None:
    key = env.funded_key()
    idem = new_key()
    env.openai.latency = 1.5
    body = {"model": "gpt-image-1", "prompt": "a slow harbour", "response_format": "b64_json"}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post(env, "/v1/images/generations", key, idem, json=body),
                                range(4)))
    assert [r.status_code for r in answers] == [200] * 4
    assert len({r.json()["data"][0]["b64_json"] for r in answers}) == 1
    assert sorted(r.headers.get("idempotent-replayed", "") for r in answers) == ["", "true", "true", "true"]
    assert len(env.openai.calls) == 1
    assert env.balance(key) == (1_000_000 - PRICE_MICROS, 0)


def test_a_5xx_may_be_retried_with_the_same_key(env: Surfaces) -> None:
    key = env.funded_key()
    idem = new_key()
    body = {"model": "gpt-image-1", "prompt": "a storm"}
    env.openai.fail(status=500, times=1)
    first = post(env, "/v1/images/generations", key, idem, json=body)
    assert first.status_code >= 500
    retry = post(env, "/v1/images/generations", key, idem, json=body)
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
    assert len(env.openai.calls) == 2
    assert env.balance(key) == (1_000_000 - PRICE_MICROS, 0)


def test_async_replay_gives_the_same_task(env: Surfaces) -> None:
    key = env.funded_key()
    idem = new_key()
    body = {"model": "gpt-image-1", "prompt": "a kite"}
    first = post(env, "/v1/images/generations?async=true", key, idem, json=body)
    again = post(env, "/v1/images/generations?async=true", key, idem, json=body)
    assert first.status_code == again.status_code == 200
    assert first.json()["task_id"] == again.json()["task_id"]


def test_edits_through_the_official_client(env: Surfaces) -> None:
    key = env.funded_key()
    idem = new_key()
    png = make_image(64, 64)
    client = OpenAI(base_url=env.gw.url + "/v1", api_key=key, max_retries=0)
    answers = [client.images.with_raw_response.edit(
        model="gpt-image-1", image=("a.png", png, "image/png"), prompt="add a hat",
        extra_headers={"Idempotency-Key": idem}) for _ in range(2)]
    assert answers[1].headers["idempotent-replayed"] == "true"  # the form's new boundary is no new request
    assert answers[0].parse().data[0].b64_json == answers[1].parse().data[0].b64_json
    assert len(env.openai.calls) == 1


def test_gemini_and_chat_surfaces(env: Surfaces) -> None:
    key = env.funded_key()
    idem = new_key()
    client = genai.Client(api_key=key, http_options=types.HttpOptions(
        base_url=env.gw.url, headers={"Idempotency-Key": idem}))
    first = client.models.generate_content(model="nano-banana", contents="a meadow")
    again = client.models.generate_content(model="nano-banana", contents="a meadow")
    data = [r.candidates[0].content.parts[-1].inline_data.data for r in (first, again)]  # type: ignore[index,union-attr]
    assert data[0] == data[1]
    assert len(env.gemini.calls) == 1

    idem = new_key()
    chat = OpenAI(base_url=env.gw.url + "/v1", api_key=key, max_retries=0)
    replies = [chat.chat.completions.create(model="nano-banana", messages=[{"role": "user", "content": "a cat"}],
                                            extra_headers={"Idempotency-Key": idem}) for _ in range(2)]
    assert replies[0].id == replies[1].id
    assert len(env.gemini.calls) == 2
    assert env.balance(key) == (1_000_000 - 2 * PRICE_MICROS, 0)
