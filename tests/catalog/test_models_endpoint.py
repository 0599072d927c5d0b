"""GET /v1/models and /v1/models/{id} tell a caller what each model accepts, from the catalog
(a config override shows at once), through the official client too."""

from __future__ import annotations

import httpx2 as httpx
from openai import OpenAI

from tests.conftest import StartGateway


def test_models_describe_their_capabilities(gateway_factory: StartGateway) -> None:
    gw = gateway_factory({"local_model": True, "limits": {"max_prompt_chars": 500},
                          "catalog": {"imagegate-shapes": {"max_images": 0, "images_on_generate": False}}})
    key = gw.key()
    listed = httpx.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    (shapes,) = [m for m in listed if m["id"] == "imagegate-shapes"]
    caps = shapes["capabilities"]
    assert caps["actions"] == ["edit", "generate"] and caps["mask"] is True and caps["max_side"] == 2048
    assert caps["reference_images"]["max"] == 0  # the operator's override, not the shipped 1
    assert caps["max_prompt_chars"] == 500 and caps["images_per_call"] == 10
    assert "16:9" in caps["aspect_ratios"] and "seed" in caps["params"]

    client = OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    one = client.models.retrieve("imagegate-shapes")
    assert one.id == "imagegate-shapes" and one.owned_by == "local"
    assert one.model_extra is not None and one.model_extra["capabilities"] == caps

    r = httpx.get(gw.url + "/v1/models/no-such-model", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model_id"
    other = gw.key(models=["something-else"])
    r = httpx.get(gw.url + "/v1/models/imagegate-shapes", headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 404
