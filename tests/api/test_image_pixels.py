"""``limits.max_image_pixels`` caps the reference images callers send (read from the header, before
any decoding): above it, a 400 ``image_too_large`` naming the image, on the synchronous and the
async path alike; at it, the image is used."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import StartGateway
from tests.emulators.base import make_image
from tests.harness import GatewayProcess

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({"local_model": True, "limits": {"max_image_pixels": LIMIT}}, name="pixels")


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def test_an_image_above_the_configured_pixels_is_refused(client: OpenAI) -> None:
    big = make_image(1001, 1000, "png", seed=1)  # 1 001 000 pixels: far below the 25 MB file limit
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(model="imagegate-shapes", image=("big.png", big, "image/png"), prompt="a red circle")
    error = exc.value.response.json()["error"]
    assert error["code"] == "image_too_large" and error["param"] == "image[0]"
    assert "1001x1000" in error["message"] and str(LIMIT) in error["message"]


def test_an_image_at_the_configured_pixels_is_used(client: OpenAI) -> None:
    ok = make_image(1000, 1000, "png", seed=2)
    r = client.images.edit(model="imagegate-shapes", image=("ok.png", ok, "image/png"), prompt="a red circle",
                           response_format="b64_json")
    assert len(r.data) == 1 and r.data[0].b64_json


def test_the_async_path_applies_the_same_cap(gw: GatewayProcess, client: OpenAI) -> None:
    big = make_image(1000, 1001, "png", seed=3)
    r = httpx.post(gw.url + "/v1/images/edits?async=true", headers={"Authorization": f"Bearer {client.api_key}"},
                   data={"model": "imagegate-shapes", "prompt": "a red circle"},
                   files={"image": ("big.png", big, "image/png")})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "image_too_large" and r.json()["error"]["param"] == "image[0]"
