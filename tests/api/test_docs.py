"""``/docs`` works offline, and ``/openapi.json`` tells a client how to authenticate, which query
parameters switch to async mode, and what an error looks like."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin

import httpx2 as httpx
import pytest
from openapi_schema_validator import OAS31Validator

from tests.conftest import StartGateway
from tests.harness import GatewayProcess

ERROR_STATUSES = ("400", "401", "403", "404", "413", "429", "5XX")


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({"admin_token": "docs-admin-token"})


@pytest.fixture(scope="module")
def spec(gw: GatewayProcess) -> dict[str, Any]:
    r = httpx.get(gw.url + "/openapi.json")
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
            if method in ("get", "post", "put", "patch", "delete")]


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = spec["components"]["schemas"][name]
    return schema


def error_schema(spec: dict[str, Any], op: dict[str, Any], status: str) -> dict[str, Any]:
    response = op["responses"][status]
    return resolve(spec, response["content"]["application/json"]["schema"])


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(gw: GatewayProcess, page: str) -> None:
    r = httpx.get(gw.url + page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", r.text), "the page must not load anything from another host"
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
    scripts = [a for a in assets if a.endswith(".js")]
    assert scripts
    for asset in assets:
        got = httpx.get(urljoin(gw.url + page, asset))
        assert got.status_code == 200, asset
        kind = got.headers["content-type"]
        if asset.endswith(".js"):
            assert "javascript" in kind and len(got.content) > 100_000
        elif asset.endswith(".css"):
            assert kind.startswith("text/css") and b"{" in got.content


def test_swagger_ui_assets_are_served(gw: GatewayProcess) -> None:
    html = httpx.get(gw.url + "/docs").text
    css = re.findall(r"""href\s*=\s*["']([^"']+\.css)["']""", html)
    js = re.findall(r"""src\s*=\s*["']([^"']+swagger-ui-bundle\.js)["']""", html)
    assert css and js
    assert b"SwaggerUIBundle" in httpx.get(gw.url + js[0]).content
    assert b".swagger-ui" in httpx.get(gw.url + css[0]).content


def test_bearer_security_on_every_authenticated_operation(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    bearer = [name for name, s in schemes.items() if s["type"] == "http" and s["scheme"].lower() == "bearer"]
    assert bearer
    for path, method, op in operations(spec):
        if path == "/healthz":
            assert not op.get("security"), "the health check needs no key"
            continue
        names = {name for requirement in op.get("security", []) for name in requirement}
        assert names & set(bearer), f"{method.upper()} {path} shows no Authorize requirement"


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/images/edits"])
def test_async_and_webhook_parameters_are_documented(spec: dict[str, Any], path: str) -> None:
    params = {p["name"]: p for p in spec["paths"][path]["post"].get("parameters", [])}
    assert params["async"]["in"] == "query" and params["async"]["schema"]["type"] == "boolean"
    assert params["webhook"]["in"] == "query" and params["webhook"]["schema"]["format"] == "uri"
    assert params["async"]["description"] and params["webhook"]["description"]


def test_every_operation_documents_its_error_shape(spec: dict[str, Any]) -> None:
    for path, method, op in operations(spec):
        assert "422" not in op["responses"], f"{method.upper()} {path}: the gateway answers 400, never 422"
        google = path.startswith("/v1beta/") or (path.startswith("/v1/models/") and ":" in path)
        for status in ERROR_STATUSES:
            if path == "/healthz" and status in ("401", "403"):
                assert status not in op["responses"], "the health check takes no key"
                continue
            body = error_schema(spec, op, status)
            inner = resolve(spec, body["properties"]["error"])
            fields = {"code", "message", "status"} if google else {"message", "type", "param", "code"}
            assert set(inner["properties"]) == fields, f"{method.upper()} {path} {status}"
            assert set(inner["required"]) == fields


def test_a_real_error_matches_the_documented_schema(gw: GatewayProcess, spec: dict[str, Any]) -> None:
    op = spec["paths"]["/v1/images/generations"]["post"]
    r = httpx.post(gw.url + "/v1/images/generations", json={"model": "imagegate-shapes", "prompt": "x"})
    assert r.status_code == 401
    schema = {**op["responses"]["401"]["content"]["application/json"]["schema"],
              "components": spec["components"]}
    OAS31Validator(schema).validate(r.json())
    bad = httpx.post(gw.url + "/v1/images/generations", json={"model": "imagegate-shapes", "prompt": "x"},
                     headers={"Authorization": f"Bearer {gw.key()}"}, params={"async": "true", "webhook": "x"})
    assert bad.status_code == 400
    OAS31Validator({**op["responses"]["400"]["content"]["application/json"]["schema"],
                    "components": spec["components"]}).validate(bad.json())


def test_idempotency_key_is_documented_on_every_work_creating_post(spec: dict[str, Any]) -> None:
    posts = [(path, op) for path, method, op in operations(spec)
             if method == "post" and not path.startswith("/admin/")]
    assert {path for path, _ in posts} >= {"/v1/images/generations", "/v1/images/edits", "/v1/chat/completions"}
    for path, op in posts:
        (header,) = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header" and not header["required"], path
        assert "409" in op["responses"], path
