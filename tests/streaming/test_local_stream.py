"""``stream: true`` on the embedded model: its partial images are real intermediate denoising
steps (the sampler's running estimate of the image), each different, the last one the image."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import numpy as np
import pytest
from openai import OpenAI
from PIL import Image

from tests.conftest import StartGateway
from tests.harness import GatewayProcess

MODEL = "imagegate-shapes"


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({})


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0) as c:
        yield c


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(np.int32)


def test_partials_are_denoising_steps_ending_in_the_image(client: OpenAI) -> None:
    events = list(client.images.generate(model=MODEL, prompt="a red circle on a blue background", size="256x256",
                                         stream=True, partial_images=3, response_format="b64_json",
                                         extra_body={"seed": 7}))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:3]] == [0, 1, 2]
    steps = [pixels(e.b64_json) for e in events]
    assert all(s.shape == (256, 256, 3) for s in steps)
    # Each partial is a different picture, converging: the distance to the image shrinks ...
    distances = [float(np.abs(s - steps[-1]).mean()) for s in steps[:3]]
    assert distances[0] > distances[1] > 0
    # ... and the last partial is the image itself, bit for bit.
    assert events[2].b64_json == events[3].b64_json
    # The same seed without streaming draws the same image.
    plain = client.images.generate(model=MODEL, prompt="a red circle on a blue background", size="256x256",
                                   response_format="b64_json", extra_body={"seed": 7})
    assert plain.data and plain.data[0].b64_json == events[3].b64_json


def test_edit_stream_with_a_mask(client: OpenAI) -> None:
    photo = np.zeros((128, 128, 3), np.uint8)
    photo[:, :] = (30, 200, 30)
    mask = np.full((128, 128, 4), 255, np.uint8)
    mask[32:96, 32:96, 3] = 0  # repaint the middle

    def png(arr: np.ndarray, mode: str) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr, mode).save(buf, format="PNG")
        return buf.getvalue()

    events = list(client.images.edit(model=MODEL, image=("p.png", png(photo, "RGB"), "image/png"),
                                     mask=("m.png", png(mask, "RGBA"), "image/png"), prompt="a yellow star",
                                     stream=True, partial_images=2, response_format="b64_json"))
    assert [e.type for e in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    first, final = pixels(events[0].b64_json), pixels(events[-1].b64_json)
    assert (first[:8, :8] == (30, 200, 30)).all() and (final[:8, :8] == (30, 200, 30)).all()  # kept pixels
    assert not (first == final).all()


def test_n_images_stream_one_completed_event_each(client: OpenAI) -> None:
    events = list(client.images.generate(model=MODEL, prompt="a green square", size="128x128", n=2,
                                         stream=True, partial_images=1, response_format="b64_json"))
    kinds = [e.type for e in events]
    assert kinds.count("image_generation.partial_image") == 2 and kinds[-2:] == ["image_generation.completed"] * 2
