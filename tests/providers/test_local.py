"""The embedded ``imagegate-shapes`` model through every surface, on a gateway with no
configuration at all (the quick start's path: no keys, no network)."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator

import httpx2 as httpx
import numpy as np
import openai
import pytest
from google import genai
from google.genai import types
from openai import OpenAI
from PIL import Image

from tests.conftest import StartGateway
from tests.harness import GatewayProcess

MODEL = "imagegate-shapes"


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({})  # embedded defaults: no channels configured


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0) as c:
        yield c


def pixels(b64: str | None) -> np.ndarray:
    assert b64
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def png(arr: np.ndarray, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_served_with_no_configuration(client: OpenAI) -> None:
    assert MODEL in [m.id for m in client.models.list()]


def test_generate_n_images_of_the_requested_size(client: OpenAI) -> None:
    r = client.images.generate(model=MODEL, prompt="a red circle on a blue background", n=3, size="320x192",
                               response_format="b64_json")
    images = [pixels(d.b64_json) for d in r.data]
    assert [i.shape for i in images] == [(192, 320, 3)] * 3
    assert r.data[0].revised_prompt == "a red circle on a blue background"


def test_url_format_and_default_size(client: OpenAI) -> None:
    r = client.images.generate(model=MODEL, prompt="a green star")
    resp = httpx.get(r.data[0].url or "")
    assert resp.status_code == 200 and Image.open(io.BytesIO(resp.content)).size == (512, 512)


def test_same_seed_same_pixels_other_seed_other_pixels(client: OpenAI) -> None:
    def draw(seed: int) -> np.ndarray:
        r = client.images.generate(model=MODEL, prompt="a small white square", size="64x64",
                                   response_format="b64_json", extra_body={"seed": seed})
        return pixels(r.data[0].b64_json)

    a, b, c = draw(7), draw(7), draw(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unknown_words_still_draw_and_revised_prompt_says_what_was_understood(client: OpenAI) -> None:
    r = client.images.generate(model=MODEL, prompt="a majestic purple dragon circle near a castle",
                               response_format="b64_json", size="64x64")
    assert pixels(r.data[0].b64_json).shape == (64, 64, 3)
    revised = r.data[0].revised_prompt or ""
    assert "circle" in revised and "dragon" not in revised and "castle" not in revised


def test_inpainting_keeps_every_unmasked_pixel(client: OpenAI) -> None:
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    alpha = np.full((128, 128), 255, np.uint8)
    alpha[32:96, 32:96] = 0  # transparent = repaint
    mask = np.dstack([np.zeros((128, 128, 3), np.uint8), alpha])
    r = client.images.edit(model=MODEL, prompt="a yellow circle", image=("a.png", png(original)),
                           mask=("m.png", png(mask, "RGBA")), response_format="b64_json",
                           extra_body={"seed": 3})
    out = pixels(r.data[0].b64_json)
    assert out.shape == original.shape
    keep = alpha == 255
    assert np.array_equal(out[keep], original[keep])
    assert not np.array_equal(out[~keep], original[~keep])


def test_image_to_image_takes_a_reference(client: OpenAI) -> None:
    ref = np.zeros((96, 96, 3), np.uint8)
    ref[:] = (200, 30, 30)
    r = client.images.generate(model=MODEL, prompt="a blue square", response_format="b64_json",
                               extra_body={"image": ["data:image/png;base64," + base64.b64encode(png(ref)).decode()],
                                           "strength": 0.0, "seed": 1})
    out = pixels(r.data[0].b64_json)
    # strength 0 keeps the reference; the answer has the reference's size.
    assert out.shape == ref.shape
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 12


def test_too_many_references_and_bad_strength_are_400(client: OpenAI) -> None:
    img = "data:image/png;base64," + base64.b64encode(png(np.zeros((8, 8, 3), np.uint8))).decode()
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model=MODEL, prompt="x", extra_body={"image": [img, img]})
    assert exc.value.response.json()["error"]["param"] == "image"
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model=MODEL, prompt="x", extra_body={"strength": 2})
    assert exc.value.response.json()["error"]["param"] == "strength"


def test_async_task(gw: GatewayProcess, client: OpenAI) -> None:
    raw = client.images.with_raw_response.generate(model=MODEL, prompt="a ring", extra_query={"async": "true"})
    task_id = raw.http_response.json()["task_id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = httpx.get(f"{gw.url}/v1/images/tasks/{task_id}",
                         headers={"Authorization": f"Bearer {client.api_key}"}).json()["data"]
        if task["status"] != "IN_PROGRESS":
            break
        time.sleep(0.05)
    assert task["status"] == "SUCCESS", task
    assert task["platform"] == "local" and len(task["data"]["data"]) == 1


def test_gemini_surface(gw: GatewayProcess, client: OpenAI) -> None:
    g = genai.Client(api_key=client.api_key, http_options=types.HttpOptions(base_url=gw.url))
    r = g.models.generate_content(model=MODEL, contents="a blue triangle",
                                  config=types.GenerateContentConfig(response_modalities=["IMAGE"]))
    parts = r.candidates[0].content.parts  # type: ignore[index,union-attr]
    images = [p.inline_data.data for p in parts if p.inline_data]  # type: ignore[union-attr]
    assert len(images) == 1 and Image.open(io.BytesIO(images[0])).size == (512, 512)  # type: ignore[arg-type]


def test_chat_surface(client: OpenAI) -> None:
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a white star"}])
    assert "![image](" in (answer.choices[0].message.content or "")
