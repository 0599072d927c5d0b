"""The web console's own routes: its pages, sign-in, and a same-origin proxy to the public and
admin API.

- ``GET /`` redirects to ``/console/``; ``/console/`` is one static page (``imagegate/console/static``,
  plain HTML + JS modules, no build step).
- ``POST /console/session`` signs in with an API key (a *caller*) or the admin token (an
  *operator*): the credential is checked, then kept only inside the session cookie, encrypted and
  authenticated (Fernet, keyed from the gateway's secret), ``HttpOnly``, ``SameSite=Strict``, with
  an expiry (``console_session_ttl``). A second, readable cookie carries the CSRF token.
- ``/console/api/{path}`` forwards to the gateway's own ``/v1/…`` (callers) and ``/admin/…``
  (operators) routes in-process (the ASGI app is called, no socket), adding the
  ``Authorization`` header from the session — so the page never holds the key, and every console
  page goes through the same API, with the same rules, as any client. A state-changing call must
  send the CSRF token in ``X-CSRF-Token`` equal to the cookie and to the one sealed in the session
  (double submit, bound to the session).
"""

from __future__ import annotations

import base64
import secrets
import time
from importlib.resources import files
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from imagegate.api.deps import state_of
from imagegate.api.images import pydantic_error
from imagegate.api.render import json_response
from imagegate.core.errors import AuthenticationFailed, NotFound, PermissionDenied

STATIC = Path(str(files("imagegate.console") / "static"))
SESSION_COOKIE = "ig_session"
CSRF_COOKIE = "ig_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Role = Literal["caller", "operator"]
# Headers of the browser's request that never reach the API: its cookies, and any credential.
_DROPPED = frozenset({b"cookie", b"authorization", b"x-goog-api-key", CSRF_HEADER.encode()})

router = APIRouter(include_in_schema=False)


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    credential: str = Field(min_length=1, max_length=4096)
    """An API key or the admin token."""


class Session(BaseModel):
    role: Role
    credential: str
    csrf: str
    expires: int


def _fernet(request: Request) -> Fernet:
    key = state_of(request).urls.signer.derive("console-session")
    return Fernet(base64.urlsafe_b64encode(key))


def _ttl(request: Request) -> int:
    return state_of(request).settings.console_session_ttl


def read_session(request: Request) -> Session:
    """The signed-in session of this request, or a 401."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise AuthenticationFailed("Sign in to the console first.")
    try:
        session = Session.model_validate_json(_fernet(request).decrypt(token.encode(), ttl=_ttl(request)))
    except (InvalidToken, ValidationError):
        raise AuthenticationFailed("The console session is invalid or has expired; sign in again.") from None
    if session.expires < time.time():
        raise AuthenticationFailed("The console session has expired; sign in again.")
    return session


def check_csrf(request: Request, session: Session) -> None:
    given = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not (given and secrets.compare_digest(given.encode(), cookie.encode())
            and secrets.compare_digest(given.encode(), session.csrf.encode())):
        raise PermissionDenied("Missing or wrong CSRF token (X-CSRF-Token).", param=CSRF_HEADER)


def _public(session: Session) -> dict[str, object]:
    return {"object": "console.session", "role": session.role, "expires_at": session.expires}


def _set_cookies(response: Response, request: Request, value: str, csrf: str, max_age: int) -> None:
    secure = request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, value, max_age=max_age, path="/console", httponly=True,
                        samesite="strict", secure=secure)
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, path="/console", httponly=False,
                        samesite="strict", secure=secure)


async def _role_of(request: Request, credential: str) -> Role:
    token = state_of(request).settings.admin_token
    if token and secrets.compare_digest(credential.encode(), token.encode()):
        return "operator"
    await state_of(request).keys.authenticate(credential)  # 401 for a bad, revoked or expired key
    return "caller"


@router.post("/console/session")
async def sign_in(request: Request) -> Response:
    # JSON only: a cross-site form cannot send it without a preflight (no login CSRF).
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise AuthenticationFailed("Sign in with a JSON body {\"credential\": ...}.")
    try:
        body = SignIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise pydantic_error(exc) from exc
    credential = body.credential.strip()
    role = await _role_of(request, credential)
    ttl = _ttl(request)
    session = Session(role=role, credential=credential, csrf=secrets.token_urlsafe(24), expires=int(time.time()) + ttl)
    sealed = _fernet(request).encrypt(session.model_dump_json().encode()).decode()
    response = json_response({**_public(session), "csrf_token": session.csrf})
    _set_cookies(response, request, sealed, session.csrf, ttl)
    return response


@router.get("/console/session")
async def who(request: Request) -> Response:
    session = read_session(request)
    return json_response({**_public(session), "csrf_token": session.csrf})


@router.delete("/console/session")
async def sign_out(request: Request) -> Response:
    try:
        session: Session | None = read_session(request)
    except AuthenticationFailed:
        session = None  # expired or forged: nothing to protect, the cookies are cleared all the same
    if session is not None:
        check_csrf(request, session)
    response = json_response({"object": "console.session", "deleted": True})
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/console", samesite="strict", httponly=name == SESSION_COOKIE)
    return response


class Forwarded(Response):
    """Answers by running the gateway's own ASGI app on a rewritten scope: the request body is
    streamed in and the answer (streamed ones included) out, untouched."""

    def __init__(self, scope: Scope) -> None:
        super().__init__()
        self.inner = scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"cache-control", b"no-store")]}
            await send(message)

        await scope["app"](self.inner, receive, send_hardened)


@router.api_route("/console/api/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def proxy(path: str, request: Request) -> Response:
    session = read_session(request)
    if request.method not in SAFE_METHODS:
        check_csrf(request, session)
    allowed = ("admin/",) if session.role == "operator" else ("v1/",)
    if path.startswith("admin/") and session.role != "operator":
        raise PermissionDenied("Operator pages need the admin token.", param="path")
    if not path.startswith(allowed):
        raise NotFound(f"The console does not forward {path!r}.", param="path")
    headers = [(k, v) for k, v in request.scope["headers"] if k not in _DROPPED]
    headers.append((b"authorization", b"Bearer " + session.credential.encode()))
    inner: Scope = {
        "type": "http", "asgi": request.scope.get("asgi", {"version": "3.0"}),
        "http_version": request.scope.get("http_version", "1.1"), "method": request.method,
        "scheme": request.url.scheme, "server": request.scope.get("server"), "client": request.scope.get("client"),
        "root_path": "", "path": "/" + path, "raw_path": ("/" + path).encode(),
        "query_string": request.scope.get("query_string", b""), "headers": headers,
        "state": dict(request.scope.get("state", {})),
    }
    return Forwarded(inner)


def _page(request: Request) -> Response:
    # Images may come from the public URL's host or a bucket's presigned URLs: any source.
    csp = ("default-src 'self'; img-src * data: blob:; connect-src 'self'; "
           "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
           "form-action 'self'")
    return FileResponse(STATIC / "index.html", headers={
        "cache-control": "no-store", "content-security-policy": csp, "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer"})


@router.get("/console/")
async def console_page(request: Request) -> Response:
    return _page(request)


@router.get("/console")
async def console_bare() -> Response:
    return RedirectResponse("/console/", status_code=308)


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/console/", status_code=307)


def install(app: FastAPI) -> None:
    """The console's routes and its static files (``/console/static``)."""
    app.mount("/console/static", StaticFiles(directory=str(STATIC)), name="console-static")
    app.include_router(router)

