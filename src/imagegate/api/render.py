"""Outcomes → response bodies (the ``data`` items are shared by images, tasks and chat)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson
from starlette.responses import Response

from imagegate.core.job import ResponseFormat
from imagegate.gateway import Delivered
from imagegate.state import AppState


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def answer_headers(request_id: str, dropped: Sequence[str] = (), adjusted: Sequence[str] = ()) -> dict[str, str]:
    """The headers of an answer: ``x-request-id``, and ``x-imagegate-dropped-params`` when the model
    ignored parameters. Their names come from the caller's body, so each is percent-encoded (UTF-8;
    letters, digits and ``-._~`` kept, a comma encoded too): a header value must be latin-1, and the
    list stays one name per comma. Every surface builds its headers here."""
    headers = {"x-request-id": request_id}
    if dropped:
        headers["x-imagegate-dropped-params"] = ",".join(quote(name, safe="") for name in dropped)
    if adjusted:  # ``aspect_ratio=4:1->21:9``: validated values, yet escaped the same way (``٤:١`` parses)
        headers["x-imagegate-adjusted-params"] = ",".join(quote(item, safe="=:->") for item in adjusted)
    return headers


def blob_url(state: AppState, key: str) -> str:
    """The signed URL, valid ``url_ttl`` seconds, of a stored image: how every answer links one."""
    return state.store.url_for(key, ttl=state.settings.url_ttl)


async def image_items(state: AppState, delivered: list[Delivered], fmt: ResponseFormat) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for d in delivered:
        item: dict[str, Any] = {}
        if fmt == "url" and d.blob is not None:
            item["url"] = blob_url(state, d.blob)
        elif d.b64 is not None:
            item["b64_json"] = d.b64
        elif d.blob is not None:
            item["b64_json"] = base64.b64encode(await state.store.get(d.blob)).decode()
        if d.revised_prompt:
            item["revised_prompt"] = d.revised_prompt
        items.append(item)
    return items
