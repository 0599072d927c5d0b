"""Emulator of Alibaba Cloud DashScope's qwen-image endpoints (providers.md §5).

- ``POST /api/v1/services/aigc/text2image/image-synthesis`` is async-only: without
  ``X-DashScope-Async: enable`` it refuses, as the real endpoint does. It creates a task that
  reports ``PENDING``, then ``RUNNING``, then ``SUCCEEDED`` with result URLs on successive
  ``GET /api/v1/tasks/{task_id}``; unknown ids are ``UNKNOWN``.
- ``POST /api/v1/services/aigc/multimodal-generation/generation`` is synchronous (qwen-image-edit).

Strict about Bearer auth, models, ``W*H`` sizes, ``n``, booleans, prompt lengths and the message
shape; errors are ``{"request_id", "code", "message"}``. ``fail_task()`` makes the next tasks end
``FAILED`` with a code (e.g. ``DataInspectionFailed``).
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

T2I_MODELS = frozenset({"qwen-image", "qwen-image-plus"})
EDIT_MODELS = {"qwen-image-edit": (1, 1), "qwen-image-edit-plus": (3, 6)}  # max images, max n
T2I_SIZES = frozenset({"1664*928", "1472*1140", "1328*1328", "1140*1472", "928*1664"})


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
            if body.get("model") not in T2I_MODELS:
                raise Refused(f"Model not exist: {body.get('model')!r}", "InvalidParameter")
            prompt = body["input"].get("prompt")
            if not isinstance(prompt, str) or not prompt or len(prompt) > 800:
                raise Refused("input.prompt is required and at most 800 characters")
            negative = body["input"].get("negative_prompt", "")
            if not isinstance(negative, str) or len(negative) > 500:
                raise Refused("input.negative_prompt must be a string of at most 500 characters")
            params = body.get("parameters", {})
            size = params.get("size", "1328*1328")
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
            model = body.get("model")
            if model not in EDIT_MODELS:
                raise Refused(f"Model not exist: {model!r}")
            images, prompt = _message(body["input"])
            max_images, max_n = EDIT_MODELS[model]
            if not 1 <= len(images) <= max_images:
                raise Refused(f"{model} takes 1 to {max_images} images")
            params = body.get("parameters", {})
            n = params.get("n", 1)
            if not isinstance(n, int) or not 1 <= n <= max_n:
                raise Refused(f"parameters.n must be between 1 and {max_n} for {model}")
            if "negative_prompt" in params and not isinstance(params["negative_prompt"], str):
                raise Refused("parameters.negative_prompt must be a string")
            size = images[-1]  # the output follows the last input image unless a size is given
            if "size" in params:
                if model == "qwen-image-edit":
                    raise Refused("parameters.size is not supported by qwen-image-edit")
                size = _edit_size(params["size"])
        except Refused as exc:
            return self.error_response(exc.status, exc.message, exc.code)
        seed = zlib.crc32(prompt.encode())
        content = [{"image": self.host_bytes(make_image(*size, "png", seed=seed + i), "image/png")} for i in range(n)]
        return web.json_response({
            "request_id": str(uuid.uuid4()),
            "output": {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": content}}]},
            "usage": {"width": size[0], "height": size[1], "image_count": n},
        })


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
    if len(texts) != 1 or not isinstance(texts[0], str) or not texts[0]:
        raise Refused("exactly one text item is required")
    return images, texts[0]


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


def _edit_size(value: Any) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\*(\d+)", value) if isinstance(value, str) else None
    if match is None or not all(512 <= int(v) <= 2048 for v in match.groups()):
        raise Refused("parameters.size must be W*H with sides 512-2048")
    return int(match[1]), int(match[2])
