"""``GET /files/{key}``: the gateway's own signed, expiring image URLs (``LocalBlobStore``).

The signature is checked before anything touches the disk, so an unsigned request learns
nothing, not even whether a key exists. Starlette's ``FileResponse`` already answers ``Range``
requests correctly (206 with ``Content-Range``, 416 with ``bytes */<size>``, multipart for
several ranges, ``If-Range``), so it serves the bytes.
"""

from __future__ import annotations

import math
import os
import stat
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.responses import FileResponse

from imagegate.core.errors import InvalidRequest, NotFound
from imagegate.storage import BlobStore, UrlSigner, content_type_of

router = APIRouter()


@router.api_route("/files/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def get_file(request: Request, key: str, expires: str | None = None, sig: str | None = None) -> Response:
    signer: UrlSigner = request.app.state.signer
    store: BlobStore = request.app.state.store
    expiry = int(expires) if expires and expires.isascii() and expires.isdigit() and len(expires) <= 12 else None
    if expiry is None or sig is None or not signer.matches(key, expiry, sig):
        return _forbidden("This file URL's signature is missing or invalid.", "invalid_signature")
    now = time.time()
    if now > expiry:
        return _forbidden("This file URL has expired; request the image again for a fresh URL.", "url_expired")
    path = store.local_path(key)
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        st = None
    if path is None or st is None or not stat.S_ISREG(st.st_mode):
        body = NotFound("The file does not exist (it may have been deleted).", code="not_found").to_openai()
        return JSONResponse(body, status_code=404)
    headers = {
        "Cache-Control": f"private, max-age={max(0, math.floor(expiry - now))}",
        "X-Content-Type-Options": "nosniff",
    }
    return FileResponse(path, media_type=content_type_of(key), headers=headers, stat_result=st)


def _forbidden(message: str, code: str) -> JSONResponse:
    return JSONResponse(InvalidRequest(message, code=code).to_openai(), status_code=403)
