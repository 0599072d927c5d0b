"""What the surfaces do with a raw request before their schemas read it: the JSON body (with an
error that says what the endpoint expects when it is not JSON), the ``async`` query flag, and the
scheme of a reference image given as text.

Schemas are validated in strict mode on the JSON surfaces: a number field takes a JSON number of
its type, never ``true``, ``"7"`` or ``1.5`` for an integer (multipart forms, where every value is
text, convert).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from starlette.requests import Request

from imagegate.core.errors import InvalidRequest

JSON_EXPECTED = "This endpoint expects a JSON object with Content-Type: application/json"
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):")  # base64 has no ':', so only a URI matches
_INT64 = 2**63


def not_json(request: Request, detail: str) -> InvalidRequest:
    """The body could not be read as JSON: say what the endpoint expects, and what was sent."""
    sent = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if sent and sent != "application/json" and not sent.endswith("+json"):
        return InvalidRequest(f"{JSON_EXPECTED}; the body sent is {sent}, not JSON.", code="invalid_json")
    return InvalidRequest(f"{JSON_EXPECTED}; the body is not valid JSON ({detail}).", code="invalid_json")


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (read with orjson)."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _unreadable(request, raw, exc) from exc
    if not isinstance(body, dict):
        raise InvalidRequest(f"{JSON_EXPECTED}, not a JSON {type(body).__name__}.", code="invalid_json")
    return body


def _unreadable(request: Request, raw: bytes, exc: orjson.JSONDecodeError) -> InvalidRequest:
    """orjson reads an integer beyond 64 bits as a float (which a strict integer field refuses) but
    fails on one beyond a double's range: valid JSON holding such a number is refused naming where
    it is; anything else is not JSON."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return not_json(request, exc.msg)
    path = _huge_int_at(body, "")
    if path is None:
        return not_json(request, exc.msg)
    return InvalidRequest(f"{path}: the integer is out of range (beyond 64 bits).", param=path or None)


def _huge_int_at(value: object, path: str) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return path if not -_INT64 <= value < 2 * _INT64 else None
    if isinstance(value, dict):
        for k, v in value.items():
            if (found := _huge_int_at(v, f"{path}.{k}" if path else str(k))) is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            if (found := _huge_int_at(v, f"{path}[{i}]")) is not None:
                return found
    return None


def async_flag(request: Request) -> bool:
    """``?async=``: true/false, 1/0, yes/no (any case); absent is false; anything else a 400 rather
    than a silent sync run."""
    value = request.query_params.get("async")
    if value is None:
        return False
    word = value.strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise InvalidRequest(f"async must be true or false (1/0 and yes/no are accepted too), not {value!r}.",
                         param="async")


def check_reference_scheme(value: str, *, param: str) -> None:
    """A reference image given as text is an http(s) URL, base64 or a data URI: a ``file:``,
    ``ftp:``, ``javascript:`` … URL is refused as such (not as "invalid base64")."""
    m = _SCHEME.match(value[:64])
    if m is not None and m[1].lower() not in ("http", "https", "data"):
        raise InvalidRequest(f"{param} is a {m[1]}: URL; reference images are accepted only as http(s) URLs, "
                             "base64 or data URIs (data:image/png;base64,…).", param=param, code="invalid_image_url")
