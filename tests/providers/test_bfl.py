"""``bfl`` (FLUX) end to end: a real gateway, the BFL emulator upstream (submit, then poll), and
the official ``openai`` client."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import StartGateway
from tests.emulators.base import Failure, make_image
from tests.emulators.bfl import BflEmulator
from tests.harness import GatewayProcess, channel
from tests.images import decode_image as decode
from tests.images import fetch_image as fetch


@pytest.fixture(scope="module")
def emu() -> Iterator[BflEmulator]:
    with BflEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: BflEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [
            channel("bfl", "bfl", emu.url, {}),  # no models: the catalog's public names (served_as)
            # Second choice for flux-kontext-pro only: failover target.
            channel("backup", "bfl", emu.url, {"flux-kontext-pro": "flux-kontext-pro"}, priority=1),
            channel("slow", "bfl", emu.url, {"flux-slow": "flux-pro-1.1"}, timeout=0.5),
        ],
        "local_model": False,
        "outbound_allowlist": ["127.0.0.1"],
    })


@pytest.fixture(autouse=True)
def _reset(emu: BflEmulator) -> None:
    emu.reset()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def submitted(emu: BflEmulator, i: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = emu.submits()[i].json
    return body


def error(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    err: dict[str, Any] = exc.value.response.json()["error"]
    return err


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- generation --------------------------------------------------------------------------------


def test_kontext_generate_submits_then_polls_until_ready(client: OpenAI, emu: BflEmulator,
                                                         gw: GatewayProcess) -> None:
    emu.pending_polls = 3
    r = client.images.generate(model="flux-kontext-pro", prompt="a lighthouse", size="1792x1024")
    assert r.data[0].url and r.data[0].url.startswith(gw.url + "/files/")
    img = fetch(r.data[0].url)
    assert img.size == (1360, 768) and img.format == "PNG"
    [submit] = emu.submits()
    assert submit.path == "/v1/flux-kontext-pro"
    assert submit.headers["x-key"] == emu.api_key
    assert submit.json == {"prompt": "a lighthouse", "aspect_ratio": "16:9"}
    assert len(emu.polls()) == 4  # three Pending, then Ready
    assert all(p.headers["x-key"] == emu.api_key for p in emu.polls())


def test_width_height_model_b64_json(client: OpenAI, emu: BflEmulator) -> None:
    r = client.images.generate(model="flux", prompt="a fox", size="1024x768", response_format="b64_json")
    assert r.data[0].b64_json
    img = decode(r.data[0].b64_json)
    assert img.size == (1024, 768) and img.format == "JPEG"
    assert emu.submits()[0].path == "/v1/flux-pro-1.1"
    assert submitted(emu) == {"prompt": "a fox", "width": 1024, "height": 768}


@pytest.mark.parametrize(("extra", "wh"), [
    ({"size": "1000x700"}, (992, 704)),
    ({"size": "2048x2048"}, (1440, 1440)),
    ({"size": "100x100"}, (256, 256)),
    ({"aspect_ratio": "16:9"}, (1376, 768)),
    ({"aspect_ratio": "9:21", "size": "1024x1024"}, (608, 1440)),  # the ratio wins over size
])
def test_width_and_height_are_multiples_of_32_in_range(client: OpenAI, emu: BflEmulator, extra: dict[str, str],
                                                       wh: tuple[int, int]) -> None:
    client.images.generate(model="flux-pro-1.1", prompt="x", extra_body=extra)
    body = submitted(emu)
    assert (body["width"], body["height"]) == wh
    assert body["width"] % 32 == 0 and body["height"] % 32 == 0
    assert 256 <= body["width"] <= 1440 and 256 <= body["height"] <= 1440


@pytest.mark.parametrize(("size", "ratio"), [("1024x1024", "1:1"), ("1536x1024", "3:2"), ("2560x1080", "21:9"),
                                             ("768x1024", "3:4"), ("400x1000", "9:21")])
def test_kontext_size_snaps_to_the_nearest_ratio(client: OpenAI, emu: BflEmulator, size: str, ratio: str) -> None:
    client.images.generate(model="flux-kontext-max", prompt="x", size=size)  # type: ignore[arg-type]
    assert submitted(emu)["aspect_ratio"] == ratio


def test_flux_dev_takes_steps_guidance_seed(client: OpenAI, emu: BflEmulator) -> None:
    client.images.generate(model="flux-dev", prompt="x",
                           extra_body={"steps": 30, "guidance": 2.5, "seed": 7, "output_format": "png"})
    assert submitted(emu) == {"prompt": "x", "steps": 30, "guidance": 2.5, "seed": 7, "output_format": "png"}


def test_out_of_range_steps_is_refused(client: OpenAI, emu: BflEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-dev", prompt="x", extra_body={"steps": 80})
    assert error(exc)["param"] == "steps"
    assert emu.calls == []


def test_webp_is_refused(client: OpenAI, emu: BflEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-kontext-pro", prompt="x", extra_body={"output_format": "webp"})
    assert error(exc)["param"] == "output_format"
    assert emu.calls == []


def test_upsampled_prompt_is_the_revised_prompt(client: OpenAI, emu: BflEmulator) -> None:
    r = client.images.generate(model="flux-kontext-pro", prompt="a cat",
                               extra_body={"prompt_upsampling": True, "safety_tolerance": 4})
    assert submitted(emu) == {"prompt": "a cat", "prompt_upsampling": True, "safety_tolerance": 4}
    assert r.data[0].revised_prompt == "a cat, highly detailed"


def test_n_fans_out_into_separate_tasks(client: OpenAI, emu: BflEmulator) -> None:
    r = client.images.generate(model="flux-kontext-pro", prompt="x", n=3)
    assert len(r.data) == 3
    assert len(emu.submits()) == 3
    assert len({u.url for u in r.data}) == 3


def test_ultra_takes_ratio_and_image_prompt(client: OpenAI, emu: BflEmulator) -> None:
    ref = make_image(64, 64, "png")
    client.images.generate(model="flux-pro-1.1-ultra", prompt="x",
                           extra_body={"aspect_ratio": "21:9", "image": [b64(ref)], "strength": 0.3, "raw": True})
    assert submitted(emu) == {"prompt": "x", "aspect_ratio": "21:9", "image_prompt": b64(ref),
                              "image_prompt_strength": 0.3, "raw": True}


# ---- reference images (Kontext) ----------------------------------------------------------------


def test_kontext_edit_sends_uploads_as_input_images(client: OpenAI, emu: BflEmulator) -> None:
    a, b = make_image(300, 200, "png", seed=1), make_image(64, 64, "jpeg", seed=2)
    r = client.images.edit(model="flux-kontext-pro", prompt="combine", image=[("a.png", a), ("b.jpg", b)],
                           response_format="b64_json")
    assert r.data[0].b64_json
    assert decode(r.data[0].b64_json).size == (1248, 832)  # Kontext keeps the first image's shape
    assert submitted(emu) == {"prompt": "combine", "input_image": b64(a), "input_image_2": b64(b)}


def test_kontext_image_urls_in_generations(client: OpenAI, emu: BflEmulator) -> None:
    ref = make_image(128, 128, "png", seed=3)
    client.images.generate(model="flux-kontext-max", prompt="make it blue",
                           extra_body={"image": [emu.host_bytes(ref, "image/png")]})
    assert submitted(emu) == {"prompt": "make it blue", "input_image": b64(ref)}


def test_urls_inside_the_prompt_become_input_images(client: OpenAI, emu: BflEmulator) -> None:
    one, two = make_image(96, 96, "png", seed=4), make_image(96, 64, "png", seed=5)
    prompt = f"{emu.host_bytes(one, 'image/png')} {emu.host_bytes(two, 'image/png')} put the hat on the dog"
    client.images.generate(model="flux-kontext-pro", prompt=prompt)
    assert submitted(emu) == {"prompt": "put the hat on the dog", "input_image": b64(one), "input_image_2": b64(two)}


def test_kontext_dev_without_an_image_is_400(client: OpenAI, emu: BflEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-kontext-dev", prompt="x")
    assert error(exc)["param"] == "image"
    assert emu.calls == []


def test_kontext_dev_with_an_image(client: OpenAI, emu: BflEmulator) -> None:
    ref = make_image(64, 64, "png")
    r = client.images.edit(model="flux-kontext-dev", prompt="x", image=("a.png", ref))
    assert r.data[0].url
    assert emu.submits()[0].path == "/v1/flux-kontext-dev"


def test_too_many_reference_images(client: OpenAI, emu: BflEmulator) -> None:
    ref = make_image(32, 32, "png")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(model="flux-kontext-pro", prompt="x", image=[("a.png", ref)] * 5)
    assert error(exc)["param"] == "image"
    assert emu.calls == []


# ---- task outcomes -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["Request Moderated", "Content Moderated"])
def test_moderation_is_a_content_policy_violation(client: OpenAI, emu: BflEmulator, status: str) -> None:
    emu.task_outcome(status, {"Moderation Reasons": ["Derivative Works"]})
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-kontext-pro", prompt="x")
    err = error(exc)
    assert err["code"] == "content_policy_violation"
    assert status in err["message"] and "Derivative Works" in err["message"]
    assert len(emu.submits()) == 1


@pytest.mark.parametrize("status", ["Error", "Task not found"])
def test_failed_task_is_502_with_the_upstreams_words(client: OpenAI, emu: BflEmulator, status: str) -> None:
    emu.task_outcome(status, {"error": "GPU fell over"} if status == "Error" else None)
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-pro-1.1", prompt="x")
    assert exc.value.status_code == 502
    err = error(exc)
    assert err["code"] == "upstream_error" and status in err["message"]
    if status == "Error":
        assert "GPU fell over" in err["message"]
    assert len(emu.submits()) == 1


def test_a_flaky_poll_is_asked_again(client: OpenAI, emu: BflEmulator) -> None:
    emu.fail(Failure(status=503, path="/v1/get_result"))
    r = client.images.generate(model="flux-pro-1.1", prompt="x")
    assert r.data[0].url
    assert len(emu.submits()) == 1
    assert len(emu.polls()) == 3  # 503, Pending, Ready


def test_foreign_polling_host_never_gets_the_key(client: OpenAI, emu: BflEmulator) -> None:
    emu.polling_base = emu.url.replace("127.0.0.1", "localhost")
    r = client.images.generate(model="flux-pro-1.1", prompt="x")
    assert r.data[0].url
    assert emu.polls() and all(p.headers["host"].startswith("127.0.0.1") for p in emu.polls())


# ---- submit failures ---------------------------------------------------------------------------


def test_rate_limit_fails_over_to_the_next_channel(client: OpenAI, emu: BflEmulator) -> None:
    emu.fail(Failure(status=429, path="/v1/flux-kontext-pro"))
    r = client.images.generate(model="flux-kontext-pro", prompt="x")
    assert r.data[0].url
    assert len(emu.submits()) == 2


def test_out_of_credits_fails_over_to_the_next_channel(client: OpenAI, emu: BflEmulator) -> None:
    emu.fail(Failure(status=402, body={"detail": "Insufficient credits"}, path="/v1/flux-kontext-pro"))
    r = client.images.generate(model="flux-kontext-pro", prompt="x")
    assert r.data[0].url
    assert len(emu.submits()) == 2


def test_rate_limit_without_another_channel_is_503(client: OpenAI, emu: BflEmulator) -> None:
    emu.fail(Failure(status=429, body={"detail": "Too many active tasks"}))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    assert exc.value.status_code == 503
    err = error(exc)
    assert err["code"] == "upstream_rate_limited" and "Too many active tasks" in err["message"]


def test_server_error_is_503_and_not_submitted_twice(client: OpenAI, emu: BflEmulator) -> None:
    emu.fail(Failure(status=500))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    assert exc.value.status_code == 503
    assert error(exc)["code"] == "upstream_unavailable"
    assert len(emu.submits()) == 1


def test_submit_timeout_is_504_and_not_submitted_twice(client: OpenAI, emu: BflEmulator) -> None:
    emu.fail(Failure(status=200, delay=3))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="flux-slow", prompt="x")
    assert exc.value.status_code == 504
    assert error(exc)["code"] == "upstream_timeout"
    assert len(emu.submits()) == 1


def test_validation_error_carries_fastapis_detail(client: OpenAI, emu: BflEmulator) -> None:
    emu.fail(Failure(status=422, body={"detail": [{"loc": ["body", "prompt"], "msg": "Field required",
                                                   "type": "missing"}]}))
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="flux-dev", prompt="x")
    err = error(exc)
    assert err["code"] == "upstream_rejected" and "prompt: Field required" in err["message"]


def test_parameters_a_model_does_not_take_are_dropped_not_judged(gw: GatewayProcess, client: OpenAI,
                                                                  emu: BflEmulator) -> None:
    r = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {client.api_key}"},
                   json={"model": "flux-kontext-pro", "prompt": "x", "steps": 500, "quality": "hd"})
    assert r.status_code == 200, r.text
    assert r.headers["x-imagegate-dropped-params"] == "quality,steps"
    assert submitted(emu) == {"prompt": "x"}


def test_edit_form_fields_reach_the_upstream_typed(client: OpenAI, emu: BflEmulator) -> None:
    ref = make_image(64, 64, "png")
    client.images.edit(model="flux-kontext-pro", prompt="x", image=("a.png", ref),
                       extra_body={"safety_tolerance": "5", "prompt_upsampling": "true", "seed": "9"})
    body = submitted(emu)
    assert (body["safety_tolerance"], body["prompt_upsampling"], body["seed"]) == (5, True, 9)


def test_async_task_polls_bfl_in_the_background(gw: GatewayProcess, client: OpenAI, emu: BflEmulator) -> None:
    emu.pending_polls = 2
    auth = {"Authorization": f"Bearer {client.api_key}"}
    r = httpx.post(gw.url + "/v1/images/generations?async=true", headers=auth,
                   json={"model": "flux-kontext-pro", "prompt": "x", "aspect_ratio": "4:3"})
    assert r.status_code == 200, r.text
    task_id = r.json()["task_id"]
    deadline = time.monotonic() + 60  # generous: the machine may be busy; success ends it early
    while time.monotonic() < deadline:
        data = httpx.get(f"{gw.url}/v1/images/tasks/{task_id}", headers=auth).json()["data"]
        if data["status"] != "IN_PROGRESS":
            break
        time.sleep(0.05)
    assert data["status"] == "SUCCESS", data
    assert fetch(data["data"]["data"][0]["url"]).size == (1184, 880)
    assert len(emu.submits()) == 1 and len(emu.polls()) >= 3  # two Pending, then Ready


# ---- the emulator is strict (so the tests above can fail) ----------------------------------------


@pytest.mark.parametrize(("path", "body", "key", "status"), [
    ("/v1/flux-pro-1.1", {"prompt": "x"}, None, 403),
    ("/v1/flux-pro-1.1", {"prompt": "x", "width": 1000}, "ok", 422),
    ("/v1/flux-pro-1.1", {"prompt": "x", "height": 1472}, "ok", 422),
    ("/v1/flux-pro-1.1", {"prompt": "x", "aspect_ratio": "1:1"}, "ok", 422),
    ("/v1/flux-kontext-pro", {"prompt": "x", "aspect_ratio": "4:1"}, "ok", 422),
    ("/v1/flux-kontext-pro", {"prompt": "x", "input_image": "bm90IGFuIGltYWdl"}, "ok", 422),
    ("/v1/flux-kontext-dev", {"prompt": "x"}, "ok", 422),
    ("/v1/flux-dev", {"prompt": "x", "steps": 0}, "ok", 422),
    ("/v1/flux-unknown", {"prompt": "x"}, "ok", 404),
])
def test_emulator_refuses_what_bfl_refuses(emu: BflEmulator, path: str, body: dict[str, Any], key: str | None,
                                           status: int) -> None:
    headers = {"x-key": emu.api_key} if key else {}
    r = httpx.post(emu.url + path, json=body, headers=headers)
    assert r.status_code == status, r.text
    assert "detail" in r.json()
    assert emu.submits()  # recorded, refused or not
