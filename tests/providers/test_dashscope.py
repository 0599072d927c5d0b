"""``dashscope`` end to end: a real gateway, the DashScope emulator and the official ``openai`` client."""

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
from tests.emulators.base import Failure, RecordedRequest, make_image
from tests.emulators.dashscope import DashScopeEmulator
from tests.harness import GatewayProcess, channel
from tests.images import decode_image as decoded
from tests.images import fetch_image as fetch

T2I = "/api/v1/services/aigc/text2image/image-synthesis"
TASKS = "/api/v1/tasks/"
MULTIMODAL = "/api/v1/services/aigc/multimodal-generation/generation"


@pytest.fixture(scope="module")
def emu() -> Iterator[DashScopeEmulator]:
    with DashScopeEmulator() as e:
        yield e


@pytest.fixture(scope="module")
def gw(emu: DashScopeEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [
            channel("ds", "dashscope", emu.url, {"qwen-image": "qwen-image", "qwen-image-edit": "qwen-image-edit",
                                                 "qwen-image-edit-plus": "qwen-image-edit-plus",
                                                 "qwen-image-max": "qwen-image-max",
                                                 "qwen-image-2.0": "qwen-image-2.0"}),
            channel("slow", "dashscope", emu.url, {"qwen-image-slow": "qwen-image"}, timeout=0.5),
            channel("badkey", "dashscope", emu.url, {"qwen-image-badkey": "qwen-image"}, api_key="wrong-key"),
            channel("ws", "dashscope", emu.url, {"qwen-image-ws": "qwen-image"}, options={"workspace": "ws-42"}),
        ],
        "local_model": False,
    })


@pytest.fixture(autouse=True)
def _reset(emu: DashScopeEmulator) -> None:
    emu.reset()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.key(), max_retries=0)


def calls(emu: DashScopeEmulator, path: str) -> list[RecordedRequest]:
    return [c for c in emu.calls if c.path.startswith(path)]


def error_of(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    return dict(exc.value.response.json()["error"])


PNG = make_image(640, 480, "png", seed=3)
URI_PNG = "data:image/png;base64," + base64.b64encode(PNG).decode()


# ---- qwen-image: the async task ------------------------------------------------------------------


def test_qwen_image_submits_a_task_and_polls_it(client: OpenAI, emu: DashScopeEmulator, gw: GatewayProcess) -> None:
    r = client.images.generate(model="qwen-image", prompt="a tea house in the rain", size="1024x1024")
    assert len(r.data) == 1 and r.data[0].url and r.data[0].url.startswith(gw.url + "/files/")
    assert fetch(r.data[0].url).size == (1328, 1328)
    (submit,) = calls(emu, T2I)
    assert submit.headers["authorization"] == "Bearer test-upstream-key"
    assert submit.headers["x-dashscope-async"] == "enable"
    assert submit.json == {"model": "qwen-image", "input": {"prompt": "a tea house in the rain"},
                           "parameters": {"n": 1, "watermark": False, "size": "1328*1328"}}
    polls = calls(emu, TASKS)
    (task_id,) = emu.tasks
    assert [p.path for p in polls] == [TASKS + task_id] * 3  # PENDING, RUNNING, SUCCEEDED
    assert all(p.method == "GET" and p.headers["authorization"] == "Bearer test-upstream-key" for p in polls)


def test_qwen_image_b64_json(client: OpenAI, emu: DashScopeEmulator) -> None:
    r = client.images.generate(model="qwen-image", prompt="a kite", response_format="b64_json",
                               extra_body={"aspect_ratio": "16:9"})
    assert r.data[0].url is None and decoded(r.data[0].b64_json).size == (1664, 928)


@pytest.mark.parametrize(("size", "native"), [
    ("1792x1024", "1664*928"), ("1024x1792", "928*1664"), ("800x600", "1472*1104"),
    ("1024x1365", "1104*1472"), ("512x512", "1328*1328"),
])
def test_sizes_snap_to_the_qwen_image_list_as_w_star_h(client: OpenAI, emu: DashScopeEmulator, size: str,
                                                       native: str) -> None:
    r = client.images.generate(model="qwen-image", prompt="x", size=size,  # type: ignore[arg-type]
                               response_format="b64_json")
    assert calls(emu, T2I)[0].json["parameters"]["size"] == native
    assert decoded(r.data[0].b64_json).size == tuple(int(v) for v in native.split("*"))


def test_n_fans_out_one_task_per_image(client: OpenAI, emu: DashScopeEmulator) -> None:
    r = client.images.generate(model="qwen-image", prompt="koi", n=3, response_format="b64_json")
    assert len(r.data) == 3
    submits = calls(emu, T2I)
    assert [s.json["parameters"]["n"] for s in submits] == [1, 1, 1]
    assert len(emu.tasks) == 3


def test_parameters_map(client: OpenAI, emu: DashScopeEmulator) -> None:
    client.images.generate(model="qwen-image", prompt="a cat", extra_body={
        "negative_prompt": "dogs", "seed": 42, "prompt_extend": False, "watermark": True})
    body = calls(emu, T2I)[0].json
    assert body["input"] == {"prompt": "a cat", "negative_prompt": "dogs"}
    assert body["parameters"] == {"n": 1, "watermark": True, "seed": 42, "prompt_extend": False}


def test_workspace_option_sends_the_workspace_header(client: OpenAI, emu: DashScopeEmulator) -> None:
    client.images.generate(model="qwen-image-ws", prompt="a cat")
    assert calls(emu, T2I)[0].headers["x-dashscope-workspace"] == "ws-42"
    assert all(p.headers["x-dashscope-workspace"] == "ws-42" for p in calls(emu, TASKS))


def test_a_flaky_poll_is_asked_again(client: OpenAI, emu: DashScopeEmulator) -> None:
    emu.fail(Failure(status=500, path=TASKS))
    r = client.images.generate(model="qwen-image", prompt="a cat")
    assert len(r.data) == 1
    assert len(calls(emu, TASKS)) == 4


# ---- qwen-image-edit: the multimodal endpoint ----------------------------------------------------


def test_edit_sends_the_image_as_a_data_uri(client: OpenAI, emu: DashScopeEmulator) -> None:
    r = client.images.edit(model="qwen-image-edit", image=("cat.png", PNG, "image/png"), prompt="make it blue",
                           response_format="b64_json")
    assert decoded(r.data[0].b64_json).size == (640, 480)  # qwen-image-edit follows the input
    (call,) = calls(emu, MULTIMODAL)
    assert call.headers["authorization"] == "Bearer test-upstream-key"
    assert "x-dashscope-async" not in call.headers
    (message,) = call.json["input"]["messages"]
    assert message["role"] == "user"
    assert message["content"] == [{"image": "data:image/png;base64," + base64.b64encode(PNG).decode()},
                                  {"text": "make it blue"}]
    assert call.json["parameters"] == {"n": 1, "watermark": False}


def test_edit_n_fans_out_and_drops_size(client: OpenAI, emu: DashScopeEmulator) -> None:
    r = client.images.edit(model="qwen-image-edit", image=("cat.png", PNG, "image/png"), prompt="blue",
                           n=2, size="1024x1024")
    assert len(r.data) == 2
    assert [c.json["parameters"]["n"] for c in calls(emu, MULTIMODAL)] == [1, 1]
    assert all("size" not in c.json["parameters"] for c in calls(emu, MULTIMODAL))


def test_generate_with_a_reference_image_uses_the_edit_endpoint(client: OpenAI, emu: DashScopeEmulator) -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    r = client.images.generate(model="qwen-image-edit", prompt="add a hat", response_format="b64_json",
                               extra_body={"image": [uri], "negative_prompt": "blur", "seed": 5})
    assert decoded(r.data[0].b64_json).size == (640, 480)
    (call,) = calls(emu, MULTIMODAL)
    assert call.json["input"]["messages"][0]["content"][0] == {"image": uri}
    assert call.json["parameters"] == {"n": 1, "watermark": False, "seed": 5, "negative_prompt": "blur"}


def test_edit_plus_takes_native_n_and_size(client: OpenAI, emu: DashScopeEmulator) -> None:
    r = client.images.edit(model="qwen-image-edit-plus", image=[("a.png", PNG, "image/png"),
                                                               ("b.png", PNG, "image/png")],
                           prompt="merge", n=2, size="1536x1024", response_format="b64_json")
    assert [decoded(d.b64_json).size for d in r.data] == [(1536, 1024)] * 2
    (call,) = calls(emu, MULTIMODAL)
    assert call.json["parameters"]["n"] == 2 and call.json["parameters"]["size"] == "1536*1024"
    assert len(call.json["input"]["messages"][0]["content"]) == 3


def test_edit_takes_up_to_three_images_and_drops_prompt_extend(client: OpenAI, emu: DashScopeEmulator) -> None:
    raw = client.images.with_raw_response.edit(
        model="qwen-image-edit", image=[("a.png", PNG, "image/png")] * 3, prompt="merge",
        extra_body={"prompt_extend": "false"})
    assert raw.headers["x-imagegate-dropped-params"] == "prompt_extend"
    (call,) = calls(emu, MULTIMODAL)
    assert len(call.json["input"]["messages"][0]["content"]) == 4
    assert call.json["parameters"] == {"n": 1, "watermark": False}


# ---- the synchronous text-to-image models --------------------------------------------------------


def test_qwen_image_max_draws_synchronously_from_text(client: OpenAI, emu: DashScopeEmulator) -> None:
    r = client.images.generate(model="qwen-image-max", prompt="a lantern", size="1792x1024", n=2,
                               response_format="b64_json", extra_body={"negative_prompt": "fog", "seed": 7})
    assert [decoded(d.b64_json).size for d in r.data] == [(1664, 928)] * 2
    sent = calls(emu, MULTIMODAL)
    assert len(sent) == 2 and calls(emu, T2I) == []  # n fixed at 1: fanned out
    assert all("x-dashscope-async" not in c.headers for c in sent)
    assert sent[0].json["input"] == {"messages": [{"role": "user", "content": [{"text": "a lantern"}]}]}
    assert sent[0].json["parameters"] == {"n": 1, "watermark": False, "size": "1664*928", "seed": 7,
                                          "negative_prompt": "fog"}


@pytest.mark.parametrize(("size", "native"), [
    ("4096x4096", "2048*2048"), ("256x256", "512*512"), ("1024x1792", "1024*1792"), ("3840x2160", "2720*1536"),
])
def test_qwen_image_2_sizes_stay_within_its_pixel_bounds(client: OpenAI, emu: DashScopeEmulator, size: str,
                                                         native: str) -> None:
    client.images.generate(model="qwen-image-2.0", prompt="x", size=size)  # type: ignore[arg-type]
    (call,) = calls(emu, MULTIMODAL)
    assert call.json["parameters"]["size"] == native
    w, h = (int(v) for v in native.split("*"))
    assert 512 * 512 <= w * h <= 2048 * 2048 and w % 16 == h % 16 == 0


# ---- refused before any upstream call ------------------------------------------------------------


@pytest.mark.parametrize(("model", "extra", "param"), [
    ("qwen-image-edit", {}, "image"),
    ("qwen-image", {"image": ["data:image/png;base64," + base64.b64encode(PNG).decode()]}, "image"),
    ("qwen-image", {"watermark": "maybe"}, "watermark"),
    ("qwen-image", {"prompt": "x" * 801}, "prompt"),
])
def test_bad_requests_are_400s_naming_the_param(client: OpenAI, emu: DashScopeEmulator, model: str,
                                                extra: dict[str, Any], param: str) -> None:
    prompt = extra.pop("prompt", "a cat")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model=model, prompt=prompt, extra_body=extra)
    assert error_of(exc)["param"] == param
    assert emu.calls == []


# ---- upstream failures ---------------------------------------------------------------------------


def test_task_refused_by_data_inspection_is_a_content_refusal(client: OpenAI, emu: DashScopeEmulator) -> None:
    emu.fail_task("DataInspectionFailed", "Output data may contain inappropriate content.")
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="qwen-image", prompt="something")
    err = error_of(exc)
    assert err["code"] == "content_policy_violation" and "DataInspectionFailed" in str(err["message"])


def test_failed_task_carries_the_upstream_code(client: OpenAI, emu: DashScopeEmulator) -> None:
    emu.fail_task("InternalError.Algo", "An internal error occurred in the algorithm.")
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="qwen-image", prompt="something")
    err = error_of(exc)
    assert exc.value.status_code == 502 and err["code"] == "upstream_error"
    assert "InternalError.Algo" in str(err["message"])


def test_partial_fan_out_failure_delivers_the_rest(client: OpenAI, emu: DashScopeEmulator) -> None:
    emu.fail_task("DataInspectionFailed", "Output data may contain inappropriate content.")
    r = client.images.generate(model="qwen-image", prompt="koi", n=3, response_format="b64_json")
    assert len(r.data) == 2


@pytest.mark.parametrize("model", ["qwen-image", "qwen-image-edit"])
def test_synchronous_data_inspection_is_a_content_refusal(client: OpenAI, emu: DashScopeEmulator,
                                                         model: str) -> None:
    emu.inspect()
    extra = {"image": ["data:image/png;base64," + base64.b64encode(PNG).decode()]} if model != "qwen-image" else {}
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model=model, prompt="something", extra_body=extra)
    assert error_of(exc)["code"] == "content_policy_violation"


@pytest.mark.parametrize(("status", "code"), [(429, "upstream_rate_limited"), (500, "upstream_unavailable")])
def test_submit_failures_map_by_status(client: OpenAI, emu: DashScopeEmulator, status: int, code: str) -> None:
    emu.fail(Failure(status=status, path=T2I))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="qwen-image", prompt="a cat")
    assert exc.value.status_code == 503 and error_of(exc)["code"] == code
    assert calls(emu, TASKS) == []


def test_invalid_api_key_is_an_operator_problem(client: OpenAI, emu: DashScopeEmulator) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="qwen-image-badkey", prompt="a cat")
    assert exc.value.status_code == 502 and error_of(exc)["code"] == "upstream_auth_failed"
    assert "Invalid API-key" not in str(error_of(exc)["message"])


def test_timeout_is_504(client: OpenAI, emu: DashScopeEmulator) -> None:
    emu.fail(Failure(delay=2, path=T2I))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="qwen-image-slow", prompt="a cat")
    assert exc.value.status_code == 504 and error_of(exc)["code"] == "upstream_timeout"


def test_malformed_submit_answer_is_502(client: OpenAI, emu: DashScopeEmulator) -> None:
    emu.fail(Failure(malformed=True, path=T2I))
    with pytest.raises(openai.APIStatusError) as exc:
        client.images.generate(model="qwen-image", prompt="a cat")
    assert exc.value.status_code == 502 and error_of(exc)["code"] == "upstream_bad_response"


def test_dropped_params_are_reported(client: OpenAI, emu: DashScopeEmulator) -> None:
    raw = client.images.with_raw_response.edit(model="qwen-image-edit", image=("a.png", PNG, "image/png"),
                                               prompt="blue", size="1024x1024", quality="high")
    assert raw.headers["x-imagegate-dropped-params"] == "quality,size"


def test_async_task_polls_dashscope_in_the_background(gw: GatewayProcess, client: OpenAI,
                                                      emu: DashScopeEmulator) -> None:
    auth = {"Authorization": f"Bearer {client.api_key}"}
    r = httpx.post(gw.url + "/v1/images/generations?async=true", headers=auth,
                   json={"model": "qwen-image", "prompt": "a pagoda", "size": "1024x1792"})
    assert r.status_code == 200, r.text
    task_id = r.json()["task_id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = httpx.get(f"{gw.url}/v1/images/tasks/{task_id}", headers=auth).json()["data"]
        if data["status"] != "IN_PROGRESS":
            break
        time.sleep(0.05)
    assert data["status"] == "SUCCESS", (data, [c.path for c in emu.calls], gw.logs()[-2000:])
    assert fetch(data["data"]["data"][0]["url"]).size == (928, 1664)
    assert len(calls(emu, T2I)) == 1 and len(calls(emu, TASKS)) == 3


# ---- the emulator is strict (so the tests above can fail) -------------------------------------------


def _post(emu: DashScopeEmulator, path: str, body: dict[str, Any], *, key: str | None = None,
          async_header: bool = True) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or emu.api_key}"}
    if async_header:
        headers["X-DashScope-Async"] = "enable"
    return httpx.post(emu.url + path, json=body, headers=headers)


@pytest.mark.parametrize(("body", "kw", "status", "code"), [
    ({"model": "qwen-image", "input": {"prompt": "x"}}, {"async_header": False}, 403, "AccessDenied"),
    ({"model": "qwen-image", "input": {"prompt": "x"}}, {"key": "wrong"}, 401, "InvalidApiKey"),
    ({"model": "qwen-image", "input": {"prompt": "x"}, "parameters": {"size": "1024x1024"}}, {}, 400,
     "InvalidParameter"),
    ({"model": "qwen-image", "input": {"prompt": "x"}, "parameters": {"n": 2}}, {}, 400, "InvalidParameter"),
    ({"model": "qwen-image", "input": {"prompt": "x"}, "parameters": {"watermark": "no"}}, {}, 400,
     "InvalidParameter"),
    ({"model": "qwen-image-edit", "input": {"prompt": "x"}}, {}, 400, "InvalidParameter"),
])
def test_emulator_refuses_bad_task_submissions(emu: DashScopeEmulator, body: dict[str, Any], kw: dict[str, Any],
                                               status: int, code: str) -> None:
    r = _post(emu, T2I, body, **kw)
    assert r.status_code == status and r.json()["code"] == code, r.text


@pytest.mark.parametrize(("model", "content", "params"), [
    ("qwen-image-edit", [{"text": "x"}], {}),
    ("qwen-image-edit", [{"image": URI_PNG}] * 4 + [{"text": "x"}], {}),
    ("qwen-image-edit", [{"image": URI_PNG}, {"text": "x"}], {"size": "1024*1024"}),
    ("qwen-image-edit", [{"image": URI_PNG}, {"text": "x"}], {"n": 2}),
    ("qwen-image-edit-plus", [{"image": URI_PNG}, {"text": "x"}], {"size": "1024x1024"}),
    ("qwen-image-edit", [{"image": "https://example.com/a.png"}, {"text": "x"}], {}),
])
def test_emulator_refuses_bad_edits(emu: DashScopeEmulator, model: str, content: list[dict[str, str]],
                                    params: dict[str, Any]) -> None:
    body = {"model": model, "input": {"messages": [{"role": "user", "content": content}]}, "parameters": params}
    r = _post(emu, MULTIMODAL, body, async_header=False)
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter", r.text


def test_unknown_task_is_unknown(emu: DashScopeEmulator) -> None:
    r = httpx.get(emu.url + TASKS + "nope", headers={"Authorization": f"Bearer {emu.api_key}"})
    assert r.json()["output"]["task_status"] == "UNKNOWN"
