"""``imagegate generate | edit | models | task watch``: the command line for people, against a running
gateway over HTTP (``--base-url``/``$IMAGEGATE_BASE_URL``, ``--api-key``/``$IMAGEGATE_API_KEY``; by
default the local gateway and the quick start's ``data/first-key.txt``).

Generations and edits are streamed (``stream: true``), so a person sees the partial images counted
as they arrive and Ctrl-C closes the stream, which cancels the job on the gateway (nothing is
charged). ``--async`` submits a task and watches it (``task watch``): a progress bar with the task's
percentage and the elapsed time. Images are saved under ``-o`` and their paths printed, one a line
(``--json``: one JSON object for scripts). Progress goes to stderr, drawn with ``rich`` on a
terminal and as plain lines otherwise. A failure prints the API's message and exits 1.

The HTTP client is aiohttp, which the gateway already depends on: no second HTTP stack to install,
and the official ``openai`` client (a test extra) knows neither tasks nor the gateway's extensions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import mimetypes
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

from imagegate.wire.openai_images import sse_events

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
FIRST_KEY = Path("data/first-key.txt")
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "png": "png", "jpeg": "jpg", "webp": "webp"}


class ApiError(Exception):
    """The gateway's error answer (or why it could not be reached)."""

    def __init__(self, message: str, *, status: int | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.param = message, status, param

    def __str__(self) -> str:
        return self.message + (f" (param: {self.param})" if self.param else "")


def _api_error(status: int, body: bytes) -> ApiError:
    try:
        err = orjson.loads(body)["error"]
        return ApiError(str(err.get("message") or f"HTTP {status}"), status=status, param=err.get("param"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return ApiError(f"HTTP {status}: {body[:200].decode(errors='replace')}", status=status)


class Client:
    """The few calls the commands make."""

    def __init__(self, base_url: str, api_key: str, session: aiohttp.ClientSession) -> None:
        self.base_url, self.session = base_url.rstrip("/"), session
        self.headers = {"Authorization": f"Bearer {api_key}"}

    async def call(self, method: str, path: str, **kw: Any) -> tuple[Any, dict[str, str]]:
        async with self.session.request(method, self.base_url + path, headers=self.headers, **kw) as r:
            body = await r.read()
            if r.status >= 400:
                raise _api_error(r.status, body)
            return orjson.loads(body), dict(r.headers)

    async def events(self, path: str, headers: dict[str, str], **kw: Any) -> AsyncIterator[dict[str, Any]]:
        """A streamed answer's events; ``headers`` receives the answer's headers."""
        async with self.session.post(self.base_url + path, headers=self.headers, **kw) as r:
            if r.status >= 400:
                raise _api_error(r.status, await r.read())
            headers.update({k.lower(): v for k, v in r.headers.items()})
            buffer = bytearray()
            async for chunk in r.content.iter_any():
                buffer += chunk.replace(b"\r", b"")
                for data in sse_events(buffer):
                    event = orjson.loads(data)
                    if isinstance(event, dict) and isinstance(event.get("error"), dict):
                        raise _api_error(r.status, data)
                    yield event

    async def download(self, url: str) -> bytes:
        async with self.session.get(url) as r:
            if r.status >= 400:
                raise _api_error(r.status, await r.read())
            return await r.read()


class Reporter:
    """Progress on stderr: a rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, label: str, *, quiet: bool = False) -> None:
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal and not quiet
        self.quiet = quiet
        self.started = time.monotonic()
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TaskProgressColumn(), TimeElapsedColumn(), console=self.console, transient=True)
        self.task = self.progress.add_task(label, total=100)
        self.label = label

    def __enter__(self) -> Reporter:
        if self.live:
            self.progress.start()
        else:
            self.say(f"{self.label} ...")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def say(self, text: str) -> None:
        if self.live:
            self.progress.console.print(text)
        elif not self.quiet:
            print(f"[{time.monotonic() - self.started:5.1f}s] {text}", file=sys.stderr, flush=True)

    def update(self, description: str, percent: float | None = None) -> None:
        if self.live:
            self.progress.update(self.task, description=description, completed=percent)
        elif not self.quiet:
            self.say(description + (f" {percent:.0f}%" if percent is not None else ""))


# ---- the commands --------------------------------------------------------------------------------


def _reference(value: str) -> str:
    """``--ref``: a URL as given, a file as a data URI."""
    if value.startswith(("http://", "https://", "data:")):
        return value
    path = Path(value)
    if not path.is_file():
        raise ApiError(f"--ref {value}: no such file")
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"model": args.model, "prompt": args.prompt, "n": args.n}
    for name in ("size", "aspect_ratio", "image_size", "seed", "quality", "output_format"):
        value = getattr(args, name, None)
        if value is not None:
            body[name] = value
    return body


class Saver:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.count = 0
        self.saved: list[dict[str, Any]] = []

    def save(self, data: bytes, fmt: str, **info: Any) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        while True:
            self.count += 1
            path = self.out / f"imagegate-{self.stamp}-{self.count}.{_EXT.get(fmt, fmt)}"
            if not path.exists():
                break
        path.write_bytes(data)
        self.saved.append({"path": str(path), **{k: v for k, v in info.items() if v is not None}})
        return path


async def _streamed(client: Client, args: argparse.Namespace, path: str, reporter: Reporter,
                    saver: Saver, **kw: Any) -> dict[str, Any]:
    headers: dict[str, str] = {}
    partials = done = 0
    usage: dict[str, Any] | None = None
    expected = args.n
    async for event in client.events(path, headers, **kw):
        kind = str(event.get("type", ""))
        if kind.endswith(".partial_image"):
            partials += 1
            reporter.update(f"partial image {partials}", 100 * done / expected)
        elif kind.endswith(".completed"):
            done += 1
            data = base64.b64decode(event["b64_json"]) if event.get("b64_json") else await client.download(event["url"])
            saver.save(data, str(event.get("output_format") or "png"), size=event.get("size"))
            usage = event.get("usage") or usage
            reporter.update(f"image {done} of {expected}", 100 * done / expected)
    dropped = headers.get("x-imagegate-dropped-params", "")
    return {"request_id": headers.get("x-request-id"), "partial_images": partials, "usage": usage,
            "dropped_params": [d for d in dropped.split(",") if d]}


async def _watch(client: Client, task_id: str, reporter: Reporter, saver: Saver, interval: float) -> dict[str, Any]:
    while True:
        body, _ = await client.call("GET", f"/v1/images/tasks/{task_id}")
        task = body["data"]
        percent = float(str(task.get("progress") or "0").rstrip("%") or 0)
        reporter.update(f"task {task_id[:8]} {str(task['status']).lower()}", percent)
        if task["status"] == "FAILURE":
            raise ApiError(f"task {task_id} failed: {task.get('fail_reason') or 'unknown reason'}")
        if task["status"] == "SUCCESS":
            data = task.get("data") or {}
            for item in data.get("data", []):
                raw = base64.b64decode(item["b64_json"]) if item.get("b64_json") else await client.download(item["url"])
                saver.save(raw, str(data.get("output_format") or "png"), size=data.get("size"))
            return {"task_id": task_id, "usage": data.get("usage")}
        await asyncio.sleep(interval)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=args.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = Client(args.base_url, args.api_key, session)
        if args.client_command == "models":
            body, _ = await client.call("GET", "/v1/models")
            return {"models": body.get("data", [])}
        saver = Saver(Path(args.output))
        if args.client_command == "watch":
            with Reporter(f"task {args.task_id[:8]}", quiet=args.json) as reporter:
                out = await _watch(client, args.task_id, reporter, saver, args.interval)
            return {**out, "images": saver.saved}
        if args.client_command == "generate" and args.async_:
            async with session.post(client.base_url + "/v1/images/generations?async=true", json=args.payload,
                                    headers=client.headers) as r:
                raw = await r.read()
                if r.status >= 400:
                    raise _api_error(r.status, raw)
            task_id = str(orjson.loads(raw)["task_id"])
            with Reporter(f"task {task_id[:8]}", quiet=args.json) as reporter:
                reporter.say(f"submitted task {task_id}")
                out = await _watch(client, task_id, reporter, saver, args.interval)
            return {**out, "images": saver.saved}
        if args.client_command == "generate":
            path, kw = "/v1/images/generations", {"json": args.payload}
        else:
            form = aiohttp.FormData()
            for name, value, filename, mime in args.payload:
                if filename is None:
                    form.add_field(name, value)
                else:
                    form.add_field(name, value, filename=filename, content_type=mime)
            path, kw = "/v1/images/edits", {"data": form}
        label = f"{args.model}: {args.client_command}"
        with Reporter(label, quiet=args.json) as reporter:
            out = await _streamed(client, args, path, reporter, saver, **kw)
        return {**out, "images": saver.saved}


def _prepare(args: argparse.Namespace) -> Any:
    """What a generation or edit sends, files read: a JSON body, or the parts of a multipart form."""
    fields = _fields(args)
    if args.client_command == "generate":
        refs = [_reference(r) for r in args.ref or []]
        if refs:
            fields["image"] = refs
        if not args.async_:
            fields.update(stream=True, response_format="b64_json")
            if args.partials:
                fields["partial_images"] = args.partials
        return fields
    parts: list[tuple[str, Any, str | None, str | None]] = []
    for name, files in (("image[]", args.images), ("mask", [args.mask] if args.mask else [])):
        for image in files:
            file = Path(image)
            if not file.is_file():
                raise ApiError(f"{image}: no such file")
            parts.append((name, file.read_bytes(), file.name, mimetypes.guess_type(file.name)[0] or "image/png"))
    fields.update(stream="true", response_format="b64_json")
    if args.partials:
        fields["partial_images"] = args.partials
    parts += [(key, str(value), None, None) for key, value in fields.items()]
    return parts


def run(settings: object, args: argparse.Namespace) -> None:
    """The handler every client command shares (``settings``: unused, the gateway is remote)."""
    if args.api_key is None:
        if not FIRST_KEY.is_file():
            print("imagegate: no API key: pass --api-key or set IMAGEGATE_API_KEY", file=sys.stderr)
            raise SystemExit(2)
        args.api_key = FIRST_KEY.read_text().strip()
    try:
        if args.client_command in ("generate", "edit"):
            args.payload = _prepare(args)
        out = asyncio.run(_run(args))
    except KeyboardInterrupt:
        print("imagegate: cancelled", file=sys.stderr)
        raise SystemExit(130) from None
    except ApiError as exc:
        _fail(args, str(exc), exc.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        _fail(args, f"cannot reach {args.base_url}: {exc or type(exc).__name__}", None)
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    elif args.client_command == "models":
        for m in out["models"]:
            print(m["id"])
    else:
        for image in out["images"]:
            print(image["path"])
        if out.get("dropped_params"):
            print(f"note: the model ignored {', '.join(out['dropped_params'])}", file=sys.stderr)


def _fail(args: argparse.Namespace, message: str, status: int | None) -> None:
    if args.json:
        print(orjson.dumps({"error": {"message": message, "status": status}}).decode())
    print(f"imagegate: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def add_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``generate``, ``edit``, ``models`` and ``task watch`` on the ``imagegate`` parser."""
    conn = argparse.ArgumentParser(add_help=False, parents=parents)
    conn.add_argument("--base-url", default=os.environ.get("IMAGEGATE_BASE_URL", DEFAULT_BASE_URL),
                      help=f"the gateway ($IMAGEGATE_BASE_URL, default {DEFAULT_BASE_URL})")
    conn.add_argument("--api-key", default=os.environ.get("IMAGEGATE_API_KEY"),
                      help=f"($IMAGEGATE_API_KEY, default: the key in {FIRST_KEY})")
    conn.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    conn.add_argument("--timeout", type=float, default=600, help="seconds without data before giving up")
    make = argparse.ArgumentParser(add_help=False, parents=[conn])
    make.add_argument("-m", "--model", default="imagegate-shapes")
    make.add_argument("-n", type=int, default=1, help="number of images")
    make.add_argument("-o", "--output", default=".", help="directory to save the images in")
    make.add_argument("--size", help="WxH")
    make.add_argument("--aspect-ratio", help="W:H, e.g. 16:9")
    make.add_argument("--image-size", choices=["1K", "2K", "4K"])
    make.add_argument("--seed", type=int)
    make.add_argument("--quality")
    make.add_argument("--output-format", choices=["png", "jpeg", "webp"])
    make.add_argument("--partials", type=int, choices=[0, 1, 2, 3], default=0,
                      help="partial images to stream (models that make them)")

    g = sub.add_parser("generate", parents=[make], help="make images from a prompt (against a running gateway)")
    g.add_argument("prompt")
    g.add_argument("--ref", action="append", help="a reference image: a file or a URL (repeatable)")
    g.add_argument("--async", dest="async_", action="store_true", help="submit a task, then watch it")
    g.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    g.set_defaults(sync_handler=run, client_command="generate")

    e = sub.add_parser("edit", parents=[make], help="edit images: IMAGE... [--mask MASK] PROMPT")
    e.add_argument("images", nargs="+", metavar="IMAGE")
    e.add_argument("prompt")
    e.add_argument("--mask")
    e.set_defaults(sync_handler=run, client_command="edit")

    sub.add_parser("models", parents=[conn], help="the models a running gateway serves").set_defaults(
        sync_handler=run, client_command="models")

    task = sub.add_parser("task", help="follow an async task of a running gateway").add_subparsers(
        dest="task_command", required=True)
    w = task.add_parser("watch", parents=[conn], help="progress of a task; saves its images when it succeeds")
    w.add_argument("task_id")
    w.add_argument("-o", "--output", default=".")
    w.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    w.set_defaults(sync_handler=run, client_command="watch")

