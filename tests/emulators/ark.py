"""Emulator of Volcengine Ark / BytePlus ModelArk ``POST /api/v3/images/generations`` (providers.md §6).

Strict about Bearer auth, the fields the official SDK sends, each model's sizes and reference
images, ``sequential_image_generation`` (Seedream 4.x and 5.0 only), ``guidance_scale`` (3.0 models
only), ``watermark``/``seed`` types and ``stream`` (not emulated: refused). Errors are
``{"error": {"code", "message", "param", "type"}}``.

``sensitive_outputs(k)`` replaces the next ``k`` generated images by per-image error items
``{"error": {"code": "OutputImageSensitiveContentDetected", ...}}`` inside an otherwise successful
``data[]``, as a partially failed group generation answers.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from PIL import Image

from tests.emulators.base import Emulator, Failure, make_image

SEEDREAM4 = "doubao-seedream-4-0-250828"
SEEDREAM3 = "doubao-seedream-3-0-t2i-250415"
SEEDEDIT = "doubao-seededit-3-0-i2i-250628"
FIELDS = frozenset({"model", "prompt", "image", "response_format", "size", "seed", "guidance_scale", "watermark",
                    "optimize_prompt", "optimize_prompt_options", "sequential_image_generation",
                    "sequential_image_generation_options", "tools", "output_format", "stream"})
SEEDREAM45 = "doubao-seedream-4-5-251128"
SEEDREAM5_LITE = "doubao-seedream-5-0-260128"


@dataclass(frozen=True)
class Group:
    """A Seedream 4.x-style model (copies of the ModelArk docs): its ``size`` presets, its pixel
    range, how many reference images it takes; ``sequential_image_generation`` on, ``guidance_scale`` off."""

    presets: dict[str, tuple[int, int]]
    pixels: tuple[int, int]
    references: int = 10


_1K, _2K, _3K, _4K = (1024, 1024), (2048, 2048), (3072, 3072), (4096, 4096)
GROUP = {
    SEEDREAM4: Group({"1K": _1K, "2K": _2K, "4K": _4K}, (1280 * 720, 4096 * 4096)),
    SEEDREAM45: Group({"2K": _2K, "4K": _4K}, (2560 * 1440, 4096 * 4096)),
    SEEDREAM5_LITE: Group({"2K": _2K, "3K": _3K}, (2560 * 1440, 3225 * 3225), references=14),
}


class Refused(Exception):
    def __init__(self, message: str, param: str = "", code: str = "InvalidParameter", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


class ArkEmulator(Emulator):
    """Seedream 4.0, 4.5 and 5.0 lite, Seedream 3.0 t2i and SeedEdit 3.0 on one endpoint."""

    def __init__(self, api_key: str = "test-upstream-key") -> None:
        super().__init__(api_key)
        self._sensitive = 0
        self._sensitive_lock = threading.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v3/images/generations", self._generations)]

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        kind = {401: "Unauthorized", 429: "TooManyRequests"}.get(
            status, "BadRequest" if status < 500 else "InternalError")
        default = {401: "AuthenticationError", 429: "RateLimitExceeded.EndpointRPMExceeded"}.get(
            status, "InvalidParameter" if status < 500 else "InternalServiceError")
        return {"error": {"code": code or default, "message": f"{message} Request id: 0217{int(time.time())}",
                          "param": "", "type": kind}}

    def reset(self) -> None:
        super().reset()
        with self._sensitive_lock:
            self._sensitive = 0

    def sensitive_outputs(self, count: int) -> None:
        """The next ``count`` generated images come back as per-image errors in ``data[]``."""
        with self._sensitive_lock:
            self._sensitive += count

    def refuse_prompt(self, times: int = 1) -> None:
        """The next ``times`` requests fail as a sensitive prompt does (400)."""
        body = self.error_body(400, "The request failed because the input text may contain sensitive information.",
                               "InputTextSensitiveContentDetected")
        self.fail(Failure(status=400, body=body, path="/images/generations"), times=times)

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        try:
            if not self.auth_bearer(request):
                raise Refused("The API key or AK/SK in the request is missing or invalid.", code="AuthenticationError",
                              status=401)
            body = self.recorded(request).json
            if not isinstance(body, dict):
                raise Refused("The request body must be a JSON object.")
            sizes, fmt = _validate(body)
        except Refused as exc:
            error = self.error_body(exc.status, exc.message, exc.code)
            error["error"]["param"] = exc.param
            return web.json_response(error, status=exc.status)
        seed = zlib.crc32(body["prompt"].encode())
        data: list[dict[str, Any]] = []
        for i, (width, height) in enumerate(sizes):
            with self._sensitive_lock:
                sensitive, self._sensitive = self._sensitive > 0, max(0, self._sensitive - 1)
            if sensitive:
                data.append({"error": {"code": "OutputImageSensitiveContentDetected",
                                       "message": "The generated image may contain sensitive information."}})
                continue
            image = make_image(width, height, "jpeg" if fmt == "jpeg" else "png", seed=seed + i)
            item: dict[str, Any] = {"size": f"{width}x{height}"}
            if body.get("response_format") == "b64_json":
                item["b64_json"] = base64.b64encode(image).decode()
            else:
                item["url"] = self.host_bytes(image, f"image/{fmt}")
            data.append(item)
        generated = sum(1 for item in data if "error" not in item)
        return web.json_response({"model": body["model"], "created": int(time.time()), "data": data,
                                  "usage": {"generated_images": generated, "output_tokens": 16384 * generated,
                                            "total_tokens": 16384 * generated}})


def _validate(body: dict[str, Any]) -> tuple[list[tuple[int, int]], str]:
    for key in body:
        if key not in FIELDS:
            raise Refused(f"The parameter `{key}` specified in the request is not valid.", key)
    model = body.get("model")
    if model not in (*GROUP, SEEDREAM3, SEEDEDIT):
        raise Refused(f"The model or endpoint {model} does not exist or you do not have access to it.", "model",
                      "InvalidEndpointOrModel.NotFound", 404)
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        raise Refused("The parameter `prompt` is required.", "prompt", "MissingParameter")
    if body.get("stream"):
        raise Refused("Streaming is not emulated.", "stream")
    if body.get("response_format", "url") not in ("url", "b64_json"):
        raise Refused("The parameter `response_format` must be url or b64_json.", "response_format")
    if "watermark" in body and not isinstance(body["watermark"], bool):
        raise Refused("The parameter `watermark` must be a boolean.", "watermark")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not -1 <= seed <= 2147483647):
        raise Refused("The parameter `seed` must be an integer in [-1, 2147483647].", "seed")
    if "guidance_scale" in body:
        scale = body["guidance_scale"]
        if model in GROUP:
            raise Refused("The parameter `guidance_scale` is not supported by this model.", "guidance_scale")
        if not isinstance(scale, int | float) or isinstance(scale, bool) or not 1 <= scale <= 10:
            raise Refused("The parameter `guidance_scale` must be in [1, 10].", "guidance_scale")
    inputs = _images(body, model)
    if model not in GROUP and ("sequential_image_generation" in body or "sequential_image_generation_options" in body):
        raise Refused("The parameter `sequential_image_generation` is not supported by this model.",
                      "sequential_image_generation")
    size = _size(body.get("size"), model, inputs)
    count = 1
    if body.get("sequential_image_generation", "disabled") == "auto":
        options = body.get("sequential_image_generation_options") or {}
        count = options.get("max_images", 15) if isinstance(options, dict) else 0
        if not isinstance(count, int) or not 1 <= count <= 15 or count + len(inputs) > 15:
            raise Refused("max_images must be 1-15, and input plus output images at most 15.", "max_images")
    elif body.get("sequential_image_generation", "disabled") != "disabled":
        raise Refused("The parameter `sequential_image_generation` must be auto or disabled.",
                      "sequential_image_generation")
    fmt = body.get("output_format", "jpeg")
    if fmt not in ("jpeg", "png"):
        raise Refused("The parameter `output_format` must be jpeg or png.", "output_format")
    return [size] * count, fmt


def _images(body: dict[str, Any], model: str) -> list[tuple[int, int]]:
    value = body.get("image")
    if model == SEEDREAM3:
        if value is not None:
            raise Refused("The parameter `image` is not supported by this model.", "image")
        return []
    if model == SEEDEDIT:
        if not isinstance(value, str):
            raise Refused("The parameter `image` must be exactly one image.", "image", "MissingParameter")
        return [_decode(value)]
    items = [] if value is None else [value] if isinstance(value, str) else value
    most = GROUP[model].references
    if not isinstance(items, list) or len(items) > most:
        raise Refused(f"The parameter `image` takes at most {most} images.", "image")
    return [_decode(item) for item in items]


def _decode(value: Any) -> tuple[int, int]:
    match = re.fullmatch(r"data:image/(png|jpeg|webp|bmp|tiff|gif);base64,(.+)", value, re.DOTALL) \
        if isinstance(value, str) else None
    if match is None:
        raise Refused("The emulator takes images as data:image/<fmt>;base64,... only.", "image")
    try:
        with Image.open(io.BytesIO(base64.b64decode(match[2], validate=True))) as img:
            return img.size
    except (binascii.Error, OSError) as exc:
        raise Refused("The image in the request could not be decoded.", "image", "InvalidImage") from exc


def _size(value: Any, model: str, inputs: list[tuple[int, int]]) -> tuple[int, int]:
    if model == SEEDEDIT:
        if value not in (None, "adaptive"):
            raise Refused("The parameter `size` must be adaptive for this model.", "size")
        return inputs[0]
    if value is None:
        return _2K if model in GROUP else _1K
    if model in GROUP and value in GROUP[model].presets:
        return GROUP[model].presets[value]
    match = re.fullmatch(r"(\d+)x(\d+)", value) if isinstance(value, str) else None
    if match is None:
        raise Refused(f"The parameter `size` specified in the request is not valid: {value}.", "size")
    width, height = int(match[1]), int(match[2])
    if model == SEEDREAM3 and not (512 <= width <= 2048 and 512 <= height <= 2048):
        raise Refused("The parameter `size` must have sides between 512 and 2048.", "size")
    if model in GROUP:
        low, high = GROUP[model].pixels
        if not (low <= width * height <= high and 1 / 16 <= width / height <= 16):
            raise Refused(f"The parameter `size` must total between {low} and {high} pixels.", "size")
    return width, height
