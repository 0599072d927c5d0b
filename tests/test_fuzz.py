"""No request body, however odd, gets a 5xx, and every 4xx speaks its surface's error shape.

A real gateway process (the embedded model only, plus the admin routes) is fuzzed from its own
``/openapi.json`` with schemathesis: every operation the document lists, ``MAX_EXAMPLES`` valid
and ``MAX_EXAMPLES`` invalid generated requests each, authenticated with a real key (the admin
token on ``/admin``). The strategies are schemathesis's, run by Hypothesis here: its pytest
loader (``schemathesis.pytest.from_fixture``) reads a pytest-internal attribute that pytest 9 no
longer has, and loading the schema at import time would start a gateway at collection.

Nothing is excluded. The streaming Gemini routes are fuzzed like the rest: an early failure keeps
its HTTP status (``api/sse.py``), and a stream that starts is a 200 whose events are not read here.
The OpenAPI document declares no request body for the Gemini routes (they read the raw body), so
there the fuzz varies the path only; ``test_gemini_routes_answer_odd_bodies_in_googles_shape``
sends them odd bodies.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote

import httpx2 as httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case

from imagegate.api.errors import is_google_surface
from tests.conftest import StartGateway
from tests.harness import GatewayProcess

ADMIN_TOKEN = "fuzz-admin-token-0123456789"
# Per operation and mode: 2 x 25 x 21 operations, about a thousand requests in well under a minute.
# A deeper run on a quiet machine: IMAGEGATE_FUZZ_EXAMPLES=500 pytest tests/test_fuzz.py
MAX_EXAMPLES = int(os.environ.get("IMAGEGATE_FUZZ_EXAMPLES", "25"))
FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(HealthCheck),
                         phases=[Phase.explicit, Phase.generate])  # no shrinking: the run stays bounded


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({"local_model": True, "admin_token": ADMIN_TOKEN}, name="fuzz")


@pytest.fixture(scope="module")
def key(gw: GatewayProcess) -> str:
    return gw.key(rpm=1_000_000)  # the fuzz must reach the handlers, not the rate limiter


def google_surface(path: str) -> bool:
    """The Gemini routes (``/v1beta/models/{m}:…``, ``/v1/models/{m}:generateContent``) answer
    Google's shape: the product's own rule, so the fuzz and the gateway cannot disagree."""
    return is_google_surface(path)


def assert_error_shape(path: str, status: int, body: Any) -> None:
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"{status} body is not an error: {body}"
    error = body["error"]
    if google_surface(path):
        assert {"code", "message", "status"} <= set(error) <= {"code", "message", "status", "details"}, error
        assert all(d.get("@type", "").startswith("type.googleapis.com/") for d in error.get("details", [])), error
        assert error["code"] == status and isinstance(error["message"], str) and isinstance(error["status"], str)
    else:
        assert {"message", "type", "param", "code"} <= set(error), error
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)


def check(path: str, response: Any) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        assert_error_shape(path, response.status_code, response.json())
    assert all(value.isascii() for name, value in response.headers.items() if name.lower().startswith("x-imagegate"))


def post(gw: GatewayProcess, key: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}
    return httpx.post(gw.url + path, headers=headers, timeout=60, **kw)


def fuzz(operation: Any, mode: GenerationMode, base_url: str, token: str) -> None:
    """Run one operation's generated requests; the first that breaks a rule raises with a curl line."""

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        try:
            check(case.path, response)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n  reproduce: {case.as_curl_command()}") from None

    run()


def has_inputs(operation: Any) -> bool:
    return any(True for _ in operation.iter_parameters()) or any(True for _ in operation.body)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_without_5xx_in_its_error_shape(gw: GatewayProcess, key: str,
                                                                mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(gw.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # the whole API: images, chat, Gemini, tasks, usage, admin, health
    failures: list[str] = []
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not has_inputs(operation):
            continue  # GET /healthz, /v1/models, /v1/keys/self: no request of theirs can break the schema
        try:
            fuzz(operation, mode, gw.url, ADMIN_TOKEN if operation.path.startswith("/admin") else key)
        except AssertionError as exc:
            failures.append(f"{operation.label} ({mode}): {exc}")
    assert not failures, "\n\n".join(failures)


# ---- bodies the schema does not describe ------------------------------------------------------
# The document says what a body may hold, not what odd bodies look like: here every surface gets
# Hypothesis-made JSON for its image parameters and unknown names, aimed at the embedded model so
# the requests get past routing into validation, geometry and the answer's headers.

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=6)
SIZES = st.sampled_from(["64x64", "96x48", "0x0", "1x1", "-64x64", "64x", "x64", "64X64", " 64x64", "64×64", "auto",
                         "99999999999999999999x1", "1e3x1e3", "64x64x64", "", "٦٤x٦٤"]) | st.text(max_size=12)
RATIOS = st.sampled_from(["16:9", "1:1", "0:1", "1:0", "-1:1", "1:99999999999999999999", "16/9", "1.5:1",
                          "16:9:1", ":", "", "١:١"]) | st.text(max_size=8)
PARAMS = st.fixed_dictionaries({}, optional={
    "n": st.integers(1, 2) | JSON, "size": SIZES | JSON, "aspect_ratio": RATIOS | JSON,
    "seed": st.integers() | JSON, "strength": st.floats(allow_nan=False, allow_infinity=False) | JSON,
    "response_format": st.sampled_from(["url", "b64_json"]) | JSON,
    "output_format": st.sampled_from(["png", "jpeg", "webp", "gif"]) | JSON,
    "quality": JSON, "style": JSON, "image_size": JSON, "output_compression": JSON, "negative_prompt": JSON,
    "image": JSON, "mask": JSON,
})
UNKNOWN = st.dictionaries(st.text(min_size=1, max_size=8), JSON, max_size=3)
PROMPTS = st.sampled_from(["a red circle", "x"]) | st.text(max_size=20)


def body_settings() -> settings:
    return settings(FUZZ_SETTINGS, max_examples=MAX_EXAMPLES * 2)


def test_odd_image_bodies(gw: GatewayProcess, key: str) -> None:
    @body_settings()
    @given(prompt=PROMPTS, params=PARAMS, unknown=UNKNOWN)
    def run(prompt: str, params: dict[str, Any], unknown: dict[str, Any]) -> None:
        body = {**unknown, **params, "model": "imagegate-shapes", "prompt": prompt}
        check("/v1/images/generations", post(gw, key, "/v1/images/generations", json=body))

    run()


def test_odd_chat_bodies(gw: GatewayProcess, key: str) -> None:
    @body_settings()
    @given(content=PROMPTS | JSON, params=PARAMS, unknown=UNKNOWN)
    def run(content: Any, params: dict[str, Any], unknown: dict[str, Any]) -> None:
        body = {**unknown, **params, "model": "imagegate-shapes", "messages": [{"role": "user", "content": content}]}
        check("/v1/chat/completions", post(gw, key, "/v1/chat/completions", json=body))

    run()


def test_odd_gemini_bodies(gw: GatewayProcess, key: str) -> None:
    config = st.fixed_dictionaries({}, optional={
        "imageConfig": st.fixed_dictionaries({}, optional={"aspectRatio": RATIOS | JSON, "imageSize": JSON}) | JSON,
        "seed": st.integers() | JSON, "candidateCount": JSON, "responseModalities": JSON, "temperature": JSON})
    part = st.fixed_dictionaries({}, optional={"text": PROMPTS | JSON, "inlineData": JSON, "fileData": JSON})

    @body_settings()
    @given(parts=st.lists(part, max_size=3) | JSON, config=config | JSON, unknown=UNKNOWN)
    def run(parts: Any, config: Any, unknown: dict[str, Any]) -> None:
        body = {**unknown, "contents": [{"role": "user", "parts": parts}], "generationConfig": config}
        path = "/v1beta/models/imagegate-shapes:generateContent"
        check(path, post(gw, key, path, json=body))

    run()


def test_unusual_parameter_names_are_percent_encoded_in_the_dropped_header(gw: GatewayProcess, key: str) -> None:
    r = post(gw, key, "/v1/images/generations",
             json={"model": "imagegate-shapes", "prompt": "a red circle", "size": "64x64", "数量": 1,
                   "a,b": 2, "quality": "hd"})
    assert r.status_code == 200, r.text
    header = r.headers["x-imagegate-dropped-params"]
    assert header.isascii()
    names = set(header.split(","))
    assert names == {"%E6%95%B0%E9%87%8F", "a%2Cb", "quality"}


def test_unusual_parameter_names_on_chat_never_break_the_headers(gw: GatewayProcess, key: str) -> None:
    body = {"model": "imagegate-shapes", "messages": [{"role": "user", "content": "a red circle"}],
            "size": "64x64", "quality": "hd", "ñandú": 1}
    r = post(gw, key, "/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    header = r.headers["x-imagegate-dropped-params"]
    assert header.isascii() and "quality" in header.split(",")
    assert {unquote(name) for name in header.split(",")} <= set(body)


@pytest.mark.parametrize("body", [b"", b"null", b"[]", b"{", b'"x"', b"\xff\xfe", b'{"contents": 5}',
                                  b'{"contents": [{"parts": [{"inlineData": {"data": 1}}]}]}'])
@pytest.mark.parametrize("path", ["/v1beta/models/imagegate-shapes:generateContent",
                                  "/v1/models/imagegate-shapes:streamGenerateContent"])
def test_gemini_routes_answer_odd_bodies_in_googles_shape(gw: GatewayProcess, key: str, path: str,
                                                          body: bytes) -> None:
    r = post(gw, key, path, content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    check(path, r)
