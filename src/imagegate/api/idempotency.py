"""The ``Idempotency-Key`` header on every POST that creates work, as one ASGI middleware.

Every surface (images sync and async, edits, Gemini, chat, streams) gets the same guarantee at
one place, before any route runs: a repeat of a finished request is answered from the stored
answer — the route, the upstream and the ledger never see it. The rules are in
``imagegate/idempotency.py``; this module reads the request, renders the errors, captures the
first answer and re-signs the gateway's own file URLs in a replay (they expire; the blob lives).
"""

from __future__ import annotations

import asyncio
import hashlib
import re

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.api.deps import api_key
from imagegate.api.errors import error_response
from imagegate.core.errors import AuthenticationFailed, IdempotencyConflict, ImagegateError, InvalidRequest
from imagegate.idempotency import Claimed, Conflict, Replay, as_raw, headers_to_keep, replayable
from imagegate.state import AppState

HEADER = b"idempotency-key"
WAIT_FOR_FIRST = 900.0
"""Seconds a repeat waits for the first request still running (the longest a task deadline is)."""
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


def fingerprint(scope: Scope, body: bytes) -> str:
    """What makes two requests the same: method, path, query and body — with a multipart body's
    random boundary taken out, so a client that rebuilds the form on retry still matches."""
    content_type = _header(scope, b"content-type") or ""
    if "boundary=" in content_type:
        boundary = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip('"')
        if boundary:
            body = body.replace(boundary.encode("latin-1"), b"")
    h = hashlib.sha256()
    for part in (scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].startswith("/admin/"):
            await self.app(scope, receive, send)
            return
        key = _header(scope, HEADER)
        if key is None:
            await self.app(scope, receive, send)
            return
        try:
            await self._idempotent(scope, receive, send, key)
        except ImagegateError as exc:
            await error_response(scope["path"], exc)(scope, receive, send)

    async def _idempotent(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        if not _KEY.fullmatch(key):
            raise InvalidRequest("The Idempotency-Key header must be 1 to 255 visible ASCII characters.",
                                 param="Idempotency-Key")
        state: AppState = scope["app"].state.ig
        body = await _read_body(receive)  # the body limit applies (PayloadTooLarge)
        replay_body = _replayer(body, receive)
        try:
            principal = await state.keys.authenticate(api_key(Request(scope)))
        except AuthenticationFailed:
            await self.app(scope, replay_body, send)  # the route answers 401 in its own shape
            return
        account = principal.account_id
        try:
            outcome = await state.idempotency.begin(account, key, fingerprint(scope, body), wait=WAIT_FOR_FIRST)
        except TimeoutError:
            raise IdempotencyConflict("A request with this Idempotency-Key is still running; retry later.",
                                      param="Idempotency-Key") from None
        if isinstance(outcome, Conflict):
            raise IdempotencyConflict("This Idempotency-Key was already used with a different request; "
                                      "use a new key for a new request.", param="Idempotency-Key")
        if isinstance(outcome, Replay):
            await self._replay(state, outcome, send)
            return
        assert isinstance(outcome, Claimed)
        await self._first(state, scope, replay_body, send, account, key)

    async def _first(self, state: AppState, scope: Scope, receive: Receive, send: Send, account: str,
                     key: str) -> None:
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            await asyncio.shield(state.idempotency.abandon(account, key))
            raise
        if replayable(status):
            await asyncio.shield(state.idempotency.finish(account, key, status, headers_to_keep(headers),
                                                          b"".join(chunks)))
        else:
            await asyncio.shield(state.idempotency.abandon(account, key))

    @staticmethod
    async def _replay(state: AppState, replay: Replay, send: Send) -> None:
        body = state.urls.resign(replay.body, state.settings.url_ttl)
        headers = {**replay.headers, "idempotent-replayed": "true", "content-length": str(len(body))}
        await send({"type": "http.response.start", "status": replay.status, "headers": as_raw(headers)})
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def _replayer(body: bytes, receive: Receive) -> Receive:
    """The body read already, then the connection's own messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
