"""``GET /files/{key}``: the gateway's own signed, expiring image URLs.

The signature is checked before anything touches the store, so an unsigned request learns
nothing, not even whether a key exists. For a local store, Starlette's ``FileResponse`` already
answers ``Range`` requests correctly (206 with ``Content-Range``, 416 with ``bytes */<size>``,
multipart for several ranges, ``If-Range``), so it serves the bytes. For a remote store (S3), the
object is streamed from the store in chunks (``BlobStore.stat`` then ``BlobStore.read``), one
byte range at a time: a single range is answered with 206 (or 416), several ranges, a malformed
``Range`` or an ``If-Range`` that no longer matches are ignored and the whole object is sent, as
RFC 9110 allows.
"""

from __future__ import annotations

import math
import os
import stat
import time
from email.utils import formatdate
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.responses import FileResponse, StreamingResponse

from imagegate.core.errors import InvalidRequest, NotFound
from imagegate.storage import BlobStore, content_type_of
from imagegate.storage.urls import FileRef, FileUrls

router = APIRouter()


@router.api_route("/files/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def get_file(request: Request, key: str, expires: str | None = None, sig: str | None = None) -> Response:
    urls: FileUrls = request.app.state.urls
    store: BlobStore = request.app.state.store
    ref = FileRef.of(key, expires, sig)
    if not ref.genuine(urls.signer):
        return _forbidden("This file URL's signature is missing or invalid.", "invalid_signature")
    expiry, now = ref.expires, time.time()
    if ref.expired(now):
        return _forbidden("This file URL has expired; request the image again for a fresh URL.", "url_expired")
    headers = {
        "Cache-Control": f"private, max-age={max(0, math.floor(expiry - now))}",
        "X-Content-Type-Options": "nosniff",
    }
    path = store.local_path(key)
    if path is None:
        return await _stream(request, store, key, headers)
    try:
        st = os.stat(path)
    except OSError:
        return _not_found()
    if not stat.S_ISREG(st.st_mode):
        return _not_found()
    return FileResponse(path, media_type=content_type_of(key), headers=headers, stat_result=st)


async def _stream(request: Request, store: BlobStore, key: str, headers: dict[str, str]) -> Response:
    """The object of a remote store, streamed; a missing object (or a malformed key) is a 404."""
    info = await store.stat(key)
    if info is None:
        return _not_found()
    headers |= {"Accept-Ranges": "bytes", "Last-Modified": formatdate(info.modified, usegmt=True)}
    if info.etag:
        headers["ETag"] = info.etag
    start, end, status = 0, info.size, 200
    wanted = request.headers.get("range")
    if wanted is not None and _if_range_holds(request.headers.get("if-range"), headers):
        span = byte_range(wanted, info.size)
        if span == "unsatisfiable":
            return Response(status_code=416, headers={"Content-Range": f"bytes */{info.size}"})
        if isinstance(span, tuple):
            start, end, status = span[0], span[1], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
    headers["Content-Length"] = str(end - start)
    media_type = content_type_of(key)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(store.read(key, start, end), status_code=status, headers=headers,
                             media_type=media_type)


def byte_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """The one byte range ``header`` asks for, as ``(start, end)`` with ``end`` exclusive;
    ``"unsatisfiable"`` when it starts past the end; None to send the whole object (not a
    ``bytes`` range, several ranges, or malformed)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        return "unsatisfiable" if suffix == 0 or size == 0 else (max(0, size - suffix), size)
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, size if last == "" else min(int(last) + 1, size)


def _if_range_holds(if_range: str | None, headers: dict[str, str]) -> bool:
    """No ``If-Range``, or it names the object as it is (strong ETag or Last-Modified)."""
    if if_range is None:
        return True
    if if_range.startswith("W/"):
        return False
    return if_range in (headers.get("ETag"), headers["Last-Modified"])


def _not_found() -> JSONResponse:
    body = NotFound("The file does not exist (it may have been deleted).", code="not_found").to_openai()
    return JSONResponse(body, status_code=404)


def _forbidden(message: str, code: str) -> JSONResponse:
    return JSONResponse(InvalidRequest(message, code=code).to_openai(), status_code=403)

