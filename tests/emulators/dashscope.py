"""Emulator of Alibaba Cloud DashScope's Qwen-Image endpoints (providers.md §5).

- ``POST /api/v1/services/aigc/text2image/image-synthesis`` is async-only: without
  ``X-DashScope-Async: enable`` it refuses, as the real endpoint does. It creates a task that
  reports ``PENDING``, then ``RUNNING``, then ``SUCCEEDED`` with result URLs on successive
  ``GET /api/v1/tasks/{task_id}``; unknown ids are ``UNKNOWN``. Only ``qwen-image`` and
  ``qwen-image-plus`` take it.
- ``POST /api/v1/services/aigc/multimodal-generation/generation`` is synchronous: one user message
  with the reference images (data URIs) and one text (every other model, and those two as well).

Strict about Bearer auth, models (``MODELS``: what each takes, as the Qwen-Image and
Qwen-Image-Edit API references say), ``W*H`` sizes, ``n``, booleans, prompt lengths and the
message shape; errors are ``{"request_id", "code", "message"}``. ``fail_task()`` makes the next
tasks end ``FAILED`` with a code (e.g. ``DataInspectionFailed``).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from tests.emulators.base import Emulator, Failure, make_image

T2I_SIZES = frozenset({"1664*928", "1472*1104", "1328*1328", "1104*1472", "928*1664"})


@dataclass(frozen=True)
class Model:
    """What one upstream model takes."""

    task: bool = False
    """The async text2image endpoint takes it (the multimodal endpoint takes every model)."""
    images: tuple[int, int] = (0, 0)
    """Reference images: least, most."""
    max_n: int = 1
    sizes: frozenset[str] | None = None
    """The only sizes it draws; else ``sides``/``pixels`` bound a free ``W*H``; neither: no size."""
    sides: tuple[int, int] | None = None
    pixels: tuple[int, int] | None = None
    prompt_extend: bool = True


_T2I = Model(sizes=T2I_SIZES)
_EDIT_PLUS = Model(images=(1, 3), max_n=6, sides=(512, 2048))
_V2 = Model(images=(0, 3), max_n=6, pixels=(512 * 512, 2048 * 2048))
MODELS: dict[str, Model] = {
    "qwen-image": Model(task=True, sizes=T2I_SIZES),
    "qwen-image-plus": Model(task=True, sizes=T2I_SIZES),
    "qwen-image-plus-2026-01-09": _T2I,
    "qwen-image-max": _T2I,
    "qwen-image-max-2025-12-30": _T2I,
    "qwen-image-edit": Model(images=(1, 3), prompt_extend=False),
    "qwen-image-edit-plus": _EDIT_PLUS,
    "qwen-image-edit-plus-2025-10-30": _EDIT_PLUS,
    "qwen-image-edit-plus-2025-12-15": _EDIT_PLUS,
    "qwen-image-edit-max": _EDIT_PLUS,
    "qwen-image-edit-max-2026-01-16": _EDIT_PLUS,
    "qwen-image-2.0": _V2,
    "qwen-image-2.0-pro": _V2,
    # Not in imagegate's shipped catalog: a model an operator adds by configuration
    # (tests/catalog/test_dashscope.py); up to 10 reference images, as the 3.0 models take.
    "qwen-image-3.0-pro": Model(images=(0, 10), max_n=6, pixels=(512 * 512, 2048 * 2048)),
}


class Refused(Exception):
    def __init__(self, message: str, code: str = "InvalidParameter", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


@dataclass
class Task:
    task_id: str
    size: tuple[int, int]
    seed: int
    polls: int = 0
    failure: tuple[str, str] | None = None
    results: list[dict[str, str]] = field(default_factory=list)


class DashScopeEmulator(Emulator):
    """qwen-image (async task) and qwen-image-edit (sync), strict about the documented contract."""

    polls_to_finish = 2
    """Polls answered PENDING/RUNNING before a task finishes."""

    def __init__(self, api_key: str = "test-upstream-key") -> None:
        super().__init__(api_key)
        self.tasks: dict[str, Task] = {}
        self._task_failures: list[tuple[str, str]] = []
        self._tasks_lock = threading.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/v1/services/aigc/text2image/image-synthesis", self._submit),
            web.get("/api/v1/tasks/{task_id}", self._task),
            web.post("/api/v1/services/aigc/multimodal-generation/generation", self._multimodal),
        ]

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        default = {401: "InvalidApiKey", 429: "Throttling", 500: "InternalError"}.get(status, "InvalidParameter")
        return {"request_id": str(uuid.uuid4()), "code": code or default, "message": message}

    def reset(self) -> None:
        super().reset()
        with self._tasks_lock:
            self.tasks.clear()
            self._task_failures.clear()

    def fail_task(self, code: str, message: str, times: int = 1) -> None:
        """The next ``times`` submitted tasks end ``FAILED`` with ``code``/``message``."""
        with self._tasks_lock:
            self._task_failures.extend([(code, message)] * times)

    def inspect(self, times: int = 1) -> None:
        """The content filter refuses the next ``times`` synchronous calls or submissions (400)."""
        body = self.error_body(400, "Input data may contain inappropriate content.", "DataInspectionFailed")
        self.fail(Failure(status=400, body=body, path="/services/aigc/"), times=times)

    # -- routes --------------------------------------------------------------------------------

    def _guard(self, request: web.Request) -> dict[str, Any]:
        if not self.auth_bearer(request):
            raise Refused("Invalid API-key provided.", "InvalidApiKey", 401)
        body = self.recorded(request).json
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            raise Refused("input is required", "InvalidParameter")
        params = body.get("parameters", {})
        if not isinstance(params, dict):
            raise Refused("parameters must be an object")
        for name in ("watermark", "prompt_extend"):
            if name in params and not isinstance(params[name], bool):
                raise Refused(f"parameters.{name} must be a boolean")
        seed = params.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2147483647):
            raise Refused("parameters.seed must be an integer in [0, 2147483647]")
        return body

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        try:
            body = self._guard(request)
            if request.headers.get("X-DashScope-Async") != "enable":
                raise Refused("current user api does not support synchronous calls", "AccessDenied", 403)
            model = MODELS.get(str(body.get("model")))
            if model is None or not model.task:
                raise Refused(f"Model not exist: {body.get('model')!r}", "InvalidParameter")
            prompt = _prompt(body["input"].get("prompt"), "input.prompt")
            negative = body["input"].get("negative_prompt", "")
            if not isinstance(negative, str) or len(negative) > 500:
                raise Refused("input.negative_prompt must be a string of at most 500 characters")
            params = body.get("parameters", {})
            size = params.get("size", "1664*928")
            if size not in T2I_SIZES:
                raise Refused(f"parameters.size must be one of {sorted(T2I_SIZES)}")
            if params.get("n", 1) != 1:
                raise Refused("parameters.n must be 1 for qwen-image")
        except Refused as exc:
            return self.error_response(exc.status, exc.message, exc.code)
        width, height = (int(v) for v in size.split("*"))
        task = Task(str(uuid.uuid4()), (width, height), zlib.crc32(prompt.encode()))
        with self._tasks_lock:
            task.failure = self._task_failures.pop(0) if self._task_failures else None
            self.tasks[task.task_id] = task
        return web.json_response({"request_id": str(uuid.uuid4()),
                                  "output": {"task_id": task.task_id, "task_status": "PENDING"}})

    async def _task(self, request: web.Request) -> web.StreamResponse:
        if not self.auth_bearer(request):
            return self.error_response(401, "Invalid API-key provided.", "InvalidApiKey")
        task_id = request.match_info["task_id"]
        with self._tasks_lock:
            task = self.tasks.get(task_id)
            if task is not None:
                task.polls += 1
        output: dict[str, Any] = {"task_id": task_id}
        if task is None:
            output["task_status"] = "UNKNOWN"
        elif task.polls <= self.polls_to_finish:
            output["task_status"] = "PENDING" if task.polls == 1 else "RUNNING"
        elif task.failure is not None:
            output.update(task_status="FAILED", code=task.failure[0], message=task.failure[1])
        else:
            if not task.results:
                image = make_image(*task.size, "png", seed=task.seed)
                task.results = [{"url": self.host_bytes(image, "image/png")}]
            output.update(task_status="SUCCEEDED", results=task.results,
                          task_metrics={"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0})
        reply: dict[str, Any] = {"request_id": str(uuid.uuid4()), "output": output}
        if output["task_status"] == "SUCCEEDED":
            reply["usage"] = {"image_count": 1}
        return web.json_response(reply)

    async def _multimodal(self, request: web.Request) -> web.StreamResponse:
        try:
            body = self._guard(request)
            name = str(body.get("model"))
            model = MODELS.get(name)
            if model is None:
                raise Refused(f"Model not exist: {name!r}")
            images, prompt = _message(body["input"])
            least, most = model.images
            if not least <= len(images) <= most:
                raise Refused(f"{name} takes {least} to {most} images")
            params = body.get("parameters", {})
            n = params.get("n", 1)
            if not isinstance(n, int) or not 1 <= n <= model.max_n:
                raise Refused(f"parameters.n must be between 1 and {model.max_n} for {name}")
            if "negative_prompt" in params and not isinstance(params["negative_prompt"], str):
                raise Refused("parameters.negative_prompt must be a string")
            if "prompt_extend" in params and not model.prompt_extend:
                raise Refused(f"parameters.prompt_extend is not supported by {name}")
            size = _size(name, model, params.get("size"), images)
        except Refused as exc:
            return self.error_response(exc.status, exc.message, exc.code)
        seed = zlib.crc32(prompt.encode())
        content = [{"image": self.host_bytes(make_image(*size, "png", seed=seed + i), "image/png")} for i in range(n)]
        return web.json_response({
            "request_id": str(uuid.uuid4()),
            "output": {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": content}}]},
            "usage": {"width": size[0], "height": size[1], "image_count": n},
        })


def _prompt(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 800:
        raise Refused(f"{where} is required and at most 800 characters")
    return value


def _size(name: str, model: Model, value: Any, images: list[tuple[int, int]]) -> tuple[int, int]:
    """The size drawn: as asked (each side rounded to a multiple of 16, as the references say),
    else the last input image's (the real one keeps its shape at about 1 MP), else the model's
    default."""
    if value is None:
        if images:
            return images[-1]
        return (1664, 928) if model.sizes else (1024, 1024)
    if model.sizes is not None:
        if value not in model.sizes:
            raise Refused(f"parameters.size must be one of {sorted(model.sizes)}")
        w, h = (int(v) for v in value.split("*"))
        return w, h
    if model.sides is None and model.pixels is None:
        raise Refused(f"parameters.size is not supported by {name}")
    match = re.fullmatch(r"(\d+)\*(\d+)", value) if isinstance(value, str) else None
    if match is None:
        raise Refused("parameters.size must be W*H")
    w, h = int(match[1]), int(match[2])
    if model.sides and not all(model.sides[0] <= v <= model.sides[1] for v in (w, h)):
        raise Refused(f"parameters.size must have sides {model.sides[0]}-{model.sides[1]}")
    if model.pixels and not model.pixels[0] <= w * h <= model.pixels[1]:
        raise Refused(f"parameters.size must be {model.pixels[0]} to {model.pixels[1]} pixels")
    return round(w / 16) * 16, round(h / 16) * 16


def _message(inputs: dict[str, Any]) -> tuple[list[tuple[int, int]], str]:
    messages = inputs.get("messages")
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
        raise Refused("input.messages must hold exactly one message")
    message = messages[0]
    if message.get("role") != "user" or not isinstance(message.get("content"), list):
        raise Refused("input.messages[0] must be a user message with a content list")
    images: list[tuple[int, int]] = []
    texts: list[str] = []
    for part in message["content"]:
        if not isinstance(part, dict) or len(part) != 1 or not set(part) <= {"image", "text"}:
            raise Refused("each content item is {\"image\": ...} or {\"text\": ...}")
        if "image" in part:
            images.append(_data_uri_size(part["image"]))
        else:
            texts.append(part["text"])
    if len(texts) != 1:
        raise Refused("exactly one text item is required")
    return images, _prompt(texts[0], "the text item")


def _data_uri_size(value: Any) -> tuple[int, int]:
    match = re.fullmatch(r"data:image/(png|jpeg|jpg|webp|bmp);base64,(.+)", value, re.DOTALL) if isinstance(
        value, str) else None
    if match is None:
        raise Refused("image must be a data URI data:image/<fmt>;base64,... (the emulator fetches no URL)")
    try:
        with Image.open(io.BytesIO(base64.b64decode(match[2], validate=True))) as img:
            return img.size
    except (binascii.Error, OSError) as exc:
        raise Refused("The image format is illegal and cannot be opened", "BadRequest.UnsupportedFileFormat") from exc
