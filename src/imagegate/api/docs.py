"""``/docs`` and ``/redoc`` with their assets served by the gateway itself (from the
``fastapi-offline`` package: no CDN, so they work on a machine without internet), and the
OpenAPI document completed with what FastAPI cannot see in the routes: the bearer key, the
``async``/``webhook`` query parameters of the image endpoints, the ``Idempotency-Key`` header
(``api/idempotency.py``, a middleware) and the error shapes."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from imagegate.api import errors
from imagegate.tasks.service import MAX_WEBHOOK_URL

ASSETS = "/docs/assets"

BEARER = "bearer"
GOOGLE_KEY = "googApiKey"
SECURITY_SCHEMES = {
    BEARER: {"type": "http", "scheme": "bearer",
             "description": "An imagegate API key (`ig-…`); on `/admin/` the admin token."},
    GOOGLE_KEY: {"type": "apiKey", "in": "header", "name": "x-goog-api-key",
                 "description": "The same API key, as Google's SDKs send it (Gemini surface only)."},
}

_NULLABLE_STRING = {"type": ["string", "null"]}
ERROR_SCHEMAS: dict[str, Any] = {
    "ErrorDetail": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string", "examples": ["invalid_request_error"]},
            "param": {**_NULLABLE_STRING, "description": "The request field at fault, when one is."},
            "code": {**_NULLABLE_STRING, "examples": ["invalid_value"]},
        },
    },
    "Error": {"type": "object", "required": ["error"], "description": "OpenAI's error shape.",
              "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}}},
    "GoogleErrorDetail": {
        "type": "object", "required": ["code", "message", "status"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                       "status": {"type": "string", "examples": ["INVALID_ARGUMENT"]}},
    },
    "GoogleError": {"type": "object", "required": ["error"], "description": "Google's error shape.",
                    "properties": {"error": {"$ref": "#/components/schemas/GoogleErrorDetail"}}},
}
ERROR_RESPONSES = {
    "400": "Invalid request; `param` names the field at fault.",
    "401": "Missing, unknown, revoked or expired API key.",
    "403": "The key may not use this model.",
    "404": "Unknown model, task or path.",
    "413": "Request body or an uploaded file is too large.",
    "409": "The `Idempotency-Key` was used for another request (POST with that header only).",
    "429": "Rate limited (see `Retry-After`) or `insufficient_quota`.",
    "5XX": "Internal error (500) or an upstream failure (502, 503, 504).",
}
ASYNC_PATHS = ("/v1/images/generations", "/v1/images/edits")
"""The operations that read ``async`` and ``webhook`` (``api/images.answer``)."""
ASYNC_PARAMETERS = [
    {"name": "async", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
     "description": "`true`: answer at once with `{\"task_id\": …}` and make the images in the background; "
                    "the result is at `GET /v1/images/tasks/{task_id}`."},
    {"name": "webhook", "in": "query", "required": False,
     "schema": {"type": "string", "format": "uri", "maxLength": MAX_WEBHOOK_URL},
     "description": "With `async=true`: an http(s) URL that receives the finished task once, signed "
                    "(Standard Webhooks) with the key's webhook secret (`GET /v1/keys/self`)."},
]


IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Any unique string (a UUID). The same key with the same request within 24 h replays the first "
                   "answer (same images, same task id, same status, header `idempotent-replayed: true`) "
                   "without calling the upstream or billing again; a repeat while the first runs waits for it; "
                   "the same key with another request is a 409. A first answer that was a 5xx is not kept: "
                   "retry with the same key. Keys are per account."}


def install(app: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets, and complete ``app.openapi()``. The app must
    be created with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            # No validator badge: it would send the document to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True})

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=root + openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS}/favicon.png", with_google_fonts=False)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                                 description=app.description, routes=app.routes)
            complete(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any]) -> None:
    """Add security, the async parameters and the error responses to ``schema`` in place.

    Every operation takes a key (an API key, or the admin token under ``/admin/``) unless it
    says ``security: []`` itself, as ``/healthz`` does."""
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    schemas.update(ERROR_SCHEMAS)
    for path, item in schema.get("paths", {}).items():
        google = errors.is_google_surface(path)
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch", "head"):
                continue
            op.setdefault("security", [{BEARER: []}, {GOOGLE_KEY: []}] if google else [{BEARER: []}])
            names = {p["name"] for p in op.get("parameters", [])}
            if path in ASYNC_PATHS and method == "post":
                op.setdefault("parameters", []).extend(p for p in ASYNC_PARAMETERS if p["name"] not in names)
            if method == "post" and not path.startswith("/admin/") and "Idempotency-Key" not in names:
                op.setdefault("parameters", []).append(IDEMPOTENCY_PARAMETER)
            responses = op.setdefault("responses", {})
            responses.pop("422", None)  # validation failures are answered as 400 (api/errors.py)
            ref = "#/components/schemas/" + ("GoogleError" if google else "Error")
            for status, description in ERROR_RESPONSES.items():
                if status in ("401", "403") and not op["security"]:
                    continue  # no key, no key errors
                if status == "409" and (method != "post" or path.startswith("/admin/")):
                    continue
                responses.setdefault(status, {"description": description,
                                              "content": {"application/json": {"schema": {"$ref": ref}}}})
    text = repr(schema.get("paths"))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}'" not in text:
            schemas.pop(unused, None)
