"""The FLUX protocols (``bfl``, ``fal``, ``replicate``) read what a model takes from the catalog:
the shipped FLUX.2 entries are served end to end against the emulators, an operator serves a model
the catalog does not ship with a ``catalog:`` entry and a channel's ``models:`` alone (no code), and
a bad entry stops start-up with an error that names its key."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import yaml
from openai import OpenAI

from tests.conftest import StartGateway
from tests.emulators.base import make_image
from tests.emulators.bfl import BflEmulator
from tests.emulators.fal import FalEmulator
from tests.emulators.replicate import ReplicateEmulator
from tests.harness import GatewayProcess, channel

# Models none of the three ships, added the way an operator would: by configuration.
CATALOG: dict[str, dict[str, Any]] = {
    # A FLUX.2 successor on BFL's API taking ten references (the emulator knows it as such).
    "flux-3-preview": {"protocol": "bfl", "like": "flux-2-pro", "max_images": 10,
                       "sources": ["tests/emulators/bfl.py"]},
    # FLUX.2 [flex] on fal and Replicate: FLUX.2 [pro]'s wire, ten references on Replicate.
    "fal-ai/flux-2-flex": {"protocol": "fal", "like": "fal-ai/flux-2-pro",
                           "sources": ["fal.ai/models/fal-ai/flux-2-flex/edit/llms.txt"]},
    "black-forest-labs/flux-2-flex": {"protocol": "replicate", "like": "black-forest-labs/flux-2-pro",
                                      "max_images": 10, "sources": ["replicate.com/black-forest-labs/flux-2-flex"]},
}


class Env:
    def __init__(self, gw: GatewayProcess, bfl: BflEmulator, fal: FalEmulator, rep: ReplicateEmulator) -> None:
        self.gw, self.bfl, self.fal, self.rep = gw, bfl, fal, rep
        self.key = gw.key()
        self.client = OpenAI(base_url=gw.url + "/v1", api_key=self.key, max_retries=0)

    def post(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {self.key}"},
                          json=body, timeout=60)


@pytest.fixture(scope="module")
def gateway(module_gateway_factory: StartGateway) -> Iterator[Env]:
    with BflEmulator() as bfl, FalEmulator() as fal, ReplicateEmulator() as rep:
        gw = module_gateway_factory({
            "channels": [
                channel("bfl", "bfl", bfl.url, {"flux-2-pro": "flux-2-pro", "flux-2-flex": "flux-2-flex",
                                                "flux-2-klein": "flux-2-klein-4b", "flux-3": "flux-3-preview"}),
                channel("fal", "fal", fal.url, {"fal/flux-2-pro": "fal-ai/flux-2-pro",
                                                "fal/flux-2-flex": "fal-ai/flux-2-flex"}),
                channel("rep", "replicate", rep.url, {"rep/flux-2-pro": "black-forest-labs/flux-2-pro",
                                                      "rep/flux-2-flex": "black-forest-labs/flux-2-flex"}),
            ],
            "catalog": CATALOG,
            "local_model": False,
            "outbound_allowlist": ["127.0.0.1"],
        }, name="flux")
        yield Env(gw, bfl, fal, rep)


@pytest.fixture
def env(gateway: Env) -> Env:
    for emu in (gateway.bfl, gateway.fal, gateway.rep):
        emu.reset()
    return gateway


def refs(count: int) -> list[bytes]:
    return [make_image(96 + 8 * i, 64, "png", seed=i) for i in range(count)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def uri(data: bytes) -> str:
    return f"data:image/png;base64,{b64(data)}"


def posted(emu: BflEmulator | FalEmulator | ReplicateEmulator) -> list[tuple[str, dict[str, Any]]]:
    return [(c.path, c.json) for c in emu.calls if c.method == "POST" and isinstance(c.json, dict)]


# ---- the shipped FLUX.2 entries -----------------------------------------------------------------


def test_bfl_flux_2_pro_takes_free_sizes_up_to_4mp_and_eight_references(env: Env) -> None:
    r = env.client.images.generate(model="flux-2-pro", prompt="a lighthouse", size="1536x1024",  # type: ignore[arg-type]
                                   response_format="b64_json", extra_body={"prompt_upsampling": True})
    assert r.data[0].b64_json and r.data[0].revised_prompt == "a lighthouse, highly detailed"
    [(path, body)] = posted(env.bfl)
    assert path == "/v1/flux-2-pro"
    assert body == {"prompt": "a lighthouse", "width": 1536, "height": 1024, "disable_pup": False}

    env.bfl.reset()
    images = refs(8)
    env.client.images.edit(model="flux-2-pro", prompt="all of them", size="4096x2304", output_format="webp",
                           image=[(f"{i}.png", img, "image/png") for i, img in enumerate(images)])
    [(_, body)] = posted(env.bfl)
    assert [body[f"input_image{s}"] for s in ("", *(f"_{i}" for i in range(2, 9)))] == [b64(i) for i in images]
    w, h = body["width"], body["height"]
    assert w % 16 == 0 and h % 16 == 0 and w * h <= 2048 * 2048 and abs(w / h - 16 / 9) < 0.02
    assert body["output_format"] == "webp"  # FLUX.2 makes webp; FLUX.1 does not


def test_bfl_flux_2_variants_differ_as_the_catalog_says(env: Env) -> None:
    r = env.post({"model": "flux-2-flex", "prompt": "a poster", "guidance": 8, "steps": 20,
                  "prompt_upsampling": False})
    assert r.status_code == 200, r.text
    [(path, body)] = posted(env.bfl)
    assert path == "/v1/flux-2-flex"
    assert (body["guidance"], body["steps"], body["prompt_upsampling"]) == (8, 20, False)

    r = env.post({"model": "flux-2-flex", "prompt": "a poster", "guidance": 11})
    assert r.status_code == 400 and r.json()["error"]["param"] == "guidance"
    r = env.post({"model": "flux-2-pro", "prompt": "a poster", "safety_tolerance": 6})  # FLUX.2: 0..5
    assert r.status_code == 400 and r.json()["error"]["param"] == "safety_tolerance"

    env.bfl.reset()
    r = env.post({"model": "flux-2-klein", "prompt": "a fox", "prompt_upsampling": True})
    assert r.status_code == 200, r.text
    assert r.headers["x-imagegate-dropped-params"] == "prompt_upsampling"  # klein has no upsampling control
    assert posted(env.bfl) == [("/v1/flux-2-klein-4b", {"prompt": "a fox"})]
    r = env.post({"model": "flux-2-klein", "prompt": "x", "image": [uri(i) for i in refs(5)]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "image"  # [klein] 4B: four references


def test_fal_flux_2_pro_edits_on_its_edit_app_one_image_a_call(env: Env) -> None:
    images = refs(2)
    r = env.client.images.edit(model="fal/flux-2-pro", prompt="merge", n=2, response_format="b64_json",
                               image=[(f"{i}.png", img, "image/png") for i, img in enumerate(images)])
    assert len(r.data) == 2
    calls = posted(env.fal)
    assert len(calls) == 2  # no num_images on FLUX.2 [pro]: n is fanned out
    for path, body in calls:
        assert path == "/fal-ai/flux-2-pro/edit"
        assert body == {"prompt": "merge", "image_urls": [uri(i) for i in images]}  # image_size: fal's "auto"

    env.fal.reset()
    env.client.images.generate(model="fal/flux-2-pro", prompt="a dune", size="1792x1024")
    assert posted(env.fal) == [("/fal-ai/flux-2-pro", {"prompt": "a dune", "image_size": {"width": 1792,
                                                                                          "height": 1024}})]


def test_replicate_flux_2_pro_takes_a_list_of_references(env: Env) -> None:
    images = refs(3)
    r = env.post({"model": "rep/flux-2-pro", "prompt": "together", "image": [uri(i) for i in images],
                  "output_format": "webp"})
    assert r.status_code == 200, r.text
    [(path, body)] = posted(env.rep)
    assert path == "/v1/models/black-forest-labs/flux-2-pro/predictions"
    assert body["input"] == {"prompt": "together", "input_images": [uri(i) for i in images],
                             "aspect_ratio": "match_input_image", "output_format": "webp"}


# ---- models added by the operator's catalog: no code ----------------------------------------------


def test_a_new_bfl_model_is_served_from_its_catalog_entry(env: Env) -> None:
    images = refs(10)  # more than any shipped model takes: the entry's max_images
    r = env.client.images.edit(model="flux-3", prompt="a crowd", size="1024x1024", response_format="b64_json",
                               image=[(f"{i}.png", img, "image/png") for i, img in enumerate(images)],
                               extra_body={"prompt_upsampling": False})
    assert r.data[0].b64_json
    [(path, body)] = posted(env.bfl)
    assert path == "/v1/flux-3-preview"
    assert body["input_image"] == b64(images[0]) and body["input_image_10"] == b64(images[9])
    # the rest is flux-2-pro's wire, inherited through like:
    assert (body["width"], body["height"], body["disable_pup"]) == (1024, 1024, True)
    with pytest.raises(openai.BadRequestError) as exc:
        env.client.images.edit(model="flux-3", prompt="x", image=[("a.png", images[0], "image/png")] * 11)
    assert exc.value.response.json()["error"]["param"] == "image"


def test_a_new_fal_model_is_served_from_its_catalog_entry(env: Env) -> None:
    images = refs(2)
    r = env.post({"model": "fal/flux-2-flex", "prompt": "a vase", "image": [uri(i) for i in images], "seed": 3})
    assert r.status_code == 200, r.text
    assert posted(env.fal) == [("/fal-ai/flux-2-flex/edit", {"prompt": "a vase", "seed": 3,
                                                              "image_urls": [uri(i) for i in images]})]
    env.fal.reset()
    r = env.post({"model": "fal/flux-2-flex", "prompt": "a vase", "n": 2, "aspect_ratio": "16:9"})
    assert r.status_code == 200, r.text
    assert posted(env.fal) == [("/fal-ai/flux-2-flex", {"prompt": "a vase", "image_size": "landscape_16_9"})] * 2


def test_a_new_replicate_model_is_served_from_its_catalog_entry(env: Env) -> None:
    images = refs(10)
    r = env.post({"model": "rep/flux-2-flex", "prompt": "a collage", "image": [uri(i) for i in images],
                  "aspect_ratio": "3:2"})
    assert r.status_code == 200, r.text
    [(path, body)] = posted(env.rep)
    assert path == "/v1/models/black-forest-labs/flux-2-flex/predictions"
    assert body["input"] == {"prompt": "a collage", "input_images": [uri(i) for i in images], "aspect_ratio": "3:2"}


def test_models_endpoint_describes_the_added_models(env: Env) -> None:
    r = httpx.get(env.gw.url + "/v1/models/flux-3", headers={"Authorization": f"Bearer {env.key}"})
    assert r.status_code == 200, r.text
    assert r.json()["capabilities"]["reference_images"]["max"] == 10


# ---- a bad entry names its key -------------------------------------------------------------------


def serve(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "imagegate.yaml"
    path.write_text(yaml.safe_dump({"local_model": False, **config}))
    return subprocess.run([sys.executable, "-m", "imagegate", "--config", str(path), "serve", "--port", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("provider", "model", "entry", "named"), [
    ("bfl", "flux-3-preview", {"like": "flux-2-pro", "wire": {"dims": {"multiple": 0}}},
     "catalog.flux-3-preview.wire.dims.multiple"),
    ("bfl", "flux-3-preview", {"like": "flux-2-pro", "max_images": "ten"}, "catalog.flux-3-preview.max_images"),
    ("fal", "fal-ai/flux-2-flex", {"like": "fal-ai/flux-2-pro", "wire": {"edit_ap": "/edit"}},
     "catalog.fal-ai/flux-2-flex.wire.edit_ap"),
    ("replicate", "black-forest-labs/flux-2-flex", {"like": "black-forest-labs/flux-2-pro", "max_n": 0},
     "catalog.black-forest-labs/flux-2-flex.max_n"),
    ("replicate", "black-forest-labs/flux-2-flex", {"like": "black-forest-labs/flux-2-pro",
                                                    "wire": {"image_list": "sometimes"}},
     "catalog.black-forest-labs/flux-2-flex.wire.image_list"),
])
def test_a_bad_catalog_entry_stops_start_up_naming_the_key(tmp_path: Path, provider: str, model: str,
                                                           entry: dict[str, Any], named: str) -> None:
    out = serve(tmp_path, {"catalog": {model: {"protocol": provider, **entry}},
                           "channels": [{"name": "c", "provider": provider, "api_key": "k",
                                         "models": {"new": model}}]})
    assert out.returncode == 2, out.stderr
    assert named in out.stderr and "Traceback" not in out.stderr
