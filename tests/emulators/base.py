"""Shared base of the loopback upstream emulators.

An emulator is a real HTTP server on 127.0.0.1: an `aiohttp.web.Application` served from a daemon
thread that owns its event loop, so the gateway under test (often a subprocess) reaches it like any
upstream. Tests drive it from the main thread:

- `calls` lists every request received, refused ones included;
- `fail()` queues scripted failures (status, body, delay, malformed answer), applied by a middleware
  after the request is recorded and before the route handler runs;
- `latency` delays every answer; `reset()` clears all of that between tests;
- `host_bytes()` serves bytes at `/_files/<id>`, for upstreams that answer with image URLs.

A subclass provides `routes()` and its upstream's `error_body()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import functools
import io
import json
import mimetypes
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs

from aiohttp import web
from PIL import Image, ImageDraw

FILES_PREFIX = "/_files/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart body."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """A request as the emulator received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    json: Any | None  # the parsed body when it is valid JSON
    form: dict[str, list[Any]]  # multipart/urlencoded fields: str values or UploadedFile
    body: bytes
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class Failure:
    """A scripted answer that replaces the route handler's."""

    status: int = 500
    body: Any = None  # dict/list -> JSON; str/bytes -> raw text; None -> the upstream's error shape
    delay: float = 0.0  # seconds to wait before answering (> gateway timeout simulates a timeout)
    malformed: bool = False  # answer 200 with an unparseable body
    path: str | None = None  # only requests whose path contains this; None: any but /_files/
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, path: str) -> bool:
        if self.path is None:
            return not path.startswith(FILES_PREFIX)
        return self.path in path


@dataclass
class _Scripted:
    failure: Failure
    remaining: int


_RECORDED = web.RequestKey("recorded", RecordedRequest)


class Emulator:
    """A loopback upstream; subclasses add the routes and the error shape of one real API."""

    client_max_size = 256 * 1024**2  # uploads: OpenAI takes up to 16 images of 50 MB each

    def __init__(self, api_key: str = "test-upstream-key") -> None:
        self.api_key = api_key
        self.latency = 0.0
        self._lock = threading.Lock()
        self._calls: list[RecordedRequest] = []
        self._failures: list[_Scripted] = []
        self._files: dict[str, tuple[bytes, str]] = {}
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- what subclasses provide -------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """The upstream's API routes."""
        return []

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        """An error body in the upstream's own shape."""
        return {"error": {"message": message, "code": code}}

    def response_headers(self) -> dict[str, str]:
        """Headers added to every answer (e.g. a request id)."""
        return {}

    def malformed_body(self) -> tuple[bytes, str]:
        """Body and content type of a `Failure(malformed=True)` answer."""
        return b'{"created": 1713833628, "data": [{"b64_json": "iVBOR', "application/json"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._error = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready), name=f"{type(self).__name__}:{self._port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or self._error is not None:
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        self._thread = self._loop = self._stopping = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._port}"

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(sock, ready))
        except BaseException as exc:
            self._error = exc
        finally:
            ready.set()

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=self.client_max_size)
        app.add_routes([web.get(FILES_PREFIX + "{file_id}", self._serve_file), *self.routes()])
        app.on_response_prepare.append(self._add_response_headers)
        # A short shutdown timeout: a handler still sleeping through a scripted delay must not hold up stop().
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    # -- test controls (called from the test thread) -----------------------------------------

    @property
    def calls(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far."""
        with self._lock:
            return list(self._calls)

    def fail(self, failure: Failure | None = None, *, times: int = 1, **kw: Any) -> None:
        """Answer the next `times` matching requests with `failure` (or `Failure(**kw)`), FIFO."""
        if times < 1:
            raise ValueError("times must be >= 1")
        failure = replace(failure, **kw) if failure is not None else Failure(**kw)
        with self._lock:
            self._failures.append(_Scripted(failure, times))

    def reset(self) -> None:
        """Forget calls, pending failures and latency (hosted files stay)."""
        with self._lock:
            self._calls.clear()
            self._failures.clear()
        self.latency = 0.0

    def host_bytes(self, data: bytes, content_type: str) -> str:
        """Serve `data` at a URL of this emulator, as upstreams that answer with links do."""
        file_id = uuid.uuid4().hex + (mimetypes.guess_extension(content_type) or "")
        with self._lock:
            self._files[file_id] = (data, content_type)
        return f"{self.url}{FILES_PREFIX}{file_id}"

    # -- helpers for subclasses ----------------------------------------------------------------

    def auth_bearer(self, request: web.Request) -> bool:
        """Whether the request carries `Authorization: Bearer <api_key>`."""
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    @staticmethod
    def recorded(request: web.Request) -> RecordedRequest:
        """The parsed form of `request` (its body stream is already consumed)."""
        return request[_RECORDED]

    def error_response(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
    ) -> web.Response:
        """A JSON answer carrying `error_body()`."""
        return web.json_response(self.error_body(status, message, code), status=status, headers=headers)

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the emulator stops."""
        if seconds > 0 and self._stopping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- internals -------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await self._dispatch(request, handler)
        except web.HTTPException as exc:  # aiohttp's own refusals (404, 405, 413) in the upstream's shape
            if exc.status < 400:
                raise
            return self.error_response(exc.status, exc.reason)

    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        recorded = await _record(request)
        request[_RECORDED] = recorded
        with self._lock:
            self._calls.append(recorded)
            failure = self._take_failure(request.path)
        await self.sleep(self.latency + (failure.delay if failure else 0.0))
        if failure is not None:
            return self._failure_response(failure)
        return await handler(request)

    def _take_failure(self, path: str) -> Failure | None:
        for scripted in self._failures:
            if scripted.failure.matches(path):
                scripted.remaining -= 1
                if scripted.remaining == 0:
                    self._failures.remove(scripted)
                return scripted.failure
        return None

    def _failure_response(self, failure: Failure) -> web.Response:
        headers = dict(failure.headers)
        if failure.malformed:
            body, content_type = self.malformed_body()
            headers.setdefault("Content-Type", content_type)
            return web.Response(status=200, body=body, headers=headers)
        if failure.body is None:
            message = f"Scripted failure: {_phrase(failure.status)}"
            return self.error_response(failure.status, message, headers=headers)
        if isinstance(failure.body, dict | list):
            return web.json_response(failure.body, status=failure.status, headers=headers)
        raw = failure.body.encode() if isinstance(failure.body, str) else bytes(failure.body)
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return web.Response(status=failure.status, body=raw, headers=headers)

    async def _serve_file(self, request: web.Request) -> web.Response:
        with self._lock:
            hosted = self._files.get(request.match_info["file_id"])
        if hosted is None:
            return self.error_response(404, "File not found")
        data, content_type = hosted
        return web.Response(body=data, headers={"Content-Type": content_type})

    async def _add_response_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in self.response_headers().items():
            response.headers.setdefault(name, value)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


async def _record(request: web.Request) -> RecordedRequest:
    body = await request.read()
    parsed_json: Any | None = None
    form: dict[str, list[Any]] = {}
    if request.content_type == "application/json":
        with contextlib.suppress(ValueError):
            parsed_json = json.loads(body)
    elif request.content_type == "multipart/form-data":
        form = parse_multipart(request.headers.get("Content-Type", ""), body)
    elif request.content_type == "application/x-www-form-urlencoded":
        fields = parse_qs(body.decode(errors="replace"), keep_blank_values=True)
        form = {name: list(values) for name, values in fields.items()}
    return RecordedRequest(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        headers={name.lower(): value for name, value in request.headers.items()},
        json=parsed_json,
        form=form,
        body=body,
    )


def parse_multipart(content_type: str, body: bytes) -> dict[str, list[Any]]:
    """Fields of a multipart/form-data body: str for plain parts, UploadedFile for file parts."""
    # The stdlib MIME parser works on bytes already read, which aiohttp's streaming reader does not.
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    form: dict[str, list[Any]] = {}
    if not message.is_multipart():
        return form
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        filename = part.get_filename()  # a part is a file upload when it carries a filename
        if filename is None:
            form.setdefault(name, []).append(data.decode(errors="replace"))
        else:
            form.setdefault(name, []).append(UploadedFile(filename, part.get_content_type(), data))
    return form


def make_image(
    width: int,
    height: int,
    fmt: str = "png",
    *,
    color: tuple[int, int, int] | None = None,
    seed: int = 0,
    transparent: bool = False,
) -> bytes:
    """A real picture (gradient and a disc) encoded as png, jpeg or webp; cheap even at 1792x1024."""
    fmt = {"jpg": "jpeg"}.get(fmt.lower(), fmt.lower())
    if fmt not in _ENCODERS:
        raise ValueError(f"unsupported image format {fmt!r}")
    return _render(width, height, fmt, tuple(color) if color else None, seed, transparent)


_ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "png": ("PNG", {"compress_level": 1}),
    "jpeg": ("JPEG", {"quality": 85}),
    "webp": ("WEBP", {"quality": 80, "method": 0}),
}


@functools.lru_cache(maxsize=64)
def _render(
    width: int, height: int, fmt: str, color: tuple[int, int, int] | None, seed: int, transparent: bool
) -> bytes:
    rnd = random.Random(seed)
    size = (width, height)
    ramp = Image.linear_gradient("L")
    blue = color[2] if color else rnd.randrange(256)
    image = Image.merge("RGB", (ramp.rotate(90).resize(size), ramp.resize(size), Image.new("L", size, blue)))
    if color:
        image = Image.blend(image, Image.new("RGB", size, color), 0.6)
    x, y, r = rnd.uniform(0.25, 0.75) * width, rnd.uniform(0.25, 0.75) * height, min(size) / 4
    disc = (x - r, y - r, x + r, y + r)
    ImageDraw.Draw(image).ellipse(disc, fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    if transparent and fmt != "jpeg":
        alpha = Image.new("L", size, 0)
        ImageDraw.Draw(alpha).ellipse(disc, fill=255)
        image.putalpha(alpha)
    pil_format, options = _ENCODERS[fmt]
    buffer = io.BytesIO()
    image.save(buffer, pil_format, **options)
    return buffer.getvalue()
