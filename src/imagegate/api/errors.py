"""Rendering errors: the OpenAI shape everywhere, the Google shape on the Gemini surface."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from imagegate import logs
from imagegate.core.errors import ImagegateError, InvalidRequest, RateLimited, RequestError

log = logging.getLogger("imagegate.api")

GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def is_google_surface(path: str) -> bool:
    return path.startswith("/v1beta/") or (
        path.startswith("/v1/models/") and path.endswith((":generateContent", ":streamGenerateContent")))


def render(request: Request, exc: ImagegateError) -> Response:
    return error_response(request.url.path, exc)


def error_response(path: str, exc: ImagegateError) -> Response:
    """``exc`` in the shape of the surface ``path`` belongs to, with the request id for the caller
    to quote — ``error.request_id`` in OpenAI's shape, a ``google.rpc.RequestInfo`` in
    ``error.details`` in Google's (where Google's own APIs put it); the code goes in the request's
    log line."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    request_id = logs.current_request_id()
    if is_google_surface(path):
        body: dict[str, Any] = {"error": {"code": exc.status, "message": exc.message,
                                          "status": GOOGLE_STATUS.get(exc.status, "UNKNOWN")}}
        if request_id is not None:
            body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.RequestInfo",
                                         "requestId": request_id}]
    else:
        body = exc.to_openai(request_id)
    if request_id is not None:
        logs.annotate(error_code=exc.code)
    return Response(orjson.dumps(body), status_code=exc.status, media_type="application/json",
                    headers=headers)


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    return InvalidRequest(f"{param or 'request'}: {first.get('msg', 'invalid value')}", param=param)


def install(app: FastAPI) -> None:
    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ImagegateError)
        if not isinstance(exc, RequestError) and exc.status >= 500:
            log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.status, exc.message)
        return render(request, exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render(request, validation_error(exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        err = RequestError(str(exc.detail), code="not_found" if exc.status_code == 404 else "http_error")
        err.status = exc.status_code  # type: ignore[misc]
        return render(request, err)

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(request, ImagegateError("The server had an error while processing your request."))

    app.add_exception_handler(ImagegateError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)
