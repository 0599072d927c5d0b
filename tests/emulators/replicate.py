"""Emulator of Replicate's predictions API for the FLUX models.

Strict about the contract of ``replicate/replicate-python`` and the models' schemas: Bearer
auth; ``POST /v1/models/{owner}/{name}/predictions`` (and ``/v1/predictions`` with a ``version``)
with a body ``{"input": {...}}`` validated per model (unknown fields, enums, ranges — refused
with Replicate's RFC 7807 422); a ``Prefer`` header of ``wait`` or ``wait=1..60``.

A prediction needs ``duration`` polls of ``GET /v1/predictions/{id}`` (``starting`` →
``processing`` → ``succeeded``). With ``duration == 0`` and ``Prefer: wait`` the create answers
``succeeded`` at once; otherwise it answers ``starting`` — without holding the connection for the
wait, so tests never sleep. Output: a list of URLs (flux-dev, flux-schnell) or one URL (the pro
and Kontext models), hosted here, or data URIs when ``data_uris``.

Failure modes: ``fail()`` (429 with a throttle ``detail``, 5xx, delays); ``fail_prediction(error)``
and ``nsfw()`` end the next predictions as ``failed`` with that error.
"""

from __future__ import annotations

import base64
import io
import re
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from tests.emulators.base import Emulator, make_image

FLUX_RATIOS = {"1:1": (1024, 1024), "16:9": (1344, 768), "21:9": (1536, 640), "3:2": (1216, 832),
               "2:3": (832, 1216), "4:5": (896, 1088), "5:4": (1088, 896), "3:4": (896, 1152),
               "4:3": (1152, 896), "9:16": (768, 1344), "9:21": (640, 1536)}
KONTEXT_RATIOS = ("match_input_image", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "4:5", "5:4", "21:9",
                  "9:21", "2:1", "1:2")
NSFW_ERROR = "All generated images contained NSFW content. Try running it again with a different prompt."


@dataclass(frozen=True)
class Model:
    fields: frozenset[str]
    ratios: tuple[str, ...]
    formats: tuple[str, ...]
    list_output: bool
    required: frozenset[str] = frozenset({"prompt"})
    max_images: int = 0
    """Length limit of ``input_images`` (FLUX.2)."""


_FLUX = frozenset({"prompt", "aspect_ratio", "num_outputs", "seed", "output_format", "output_quality",
                   "disable_safety_checker", "go_fast", "megapixels", "num_inference_steps"})
MODELS = {
    "black-forest-labs/flux-dev": Model(_FLUX | {"image", "prompt_strength", "guidance"}, tuple(FLUX_RATIOS),
                                        ("webp", "jpg", "png"), True),
    "black-forest-labs/flux-schnell": Model(_FLUX, tuple(FLUX_RATIOS), ("webp", "jpg", "png"), True),
    "black-forest-labs/flux-1.1-pro": Model(
        frozenset({"prompt", "aspect_ratio", "width", "height", "seed", "output_format", "output_quality",
                   "safety_tolerance", "prompt_upsampling", "image_prompt"}),
        ("custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"), ("webp", "jpg", "png"), False),
    **{f"black-forest-labs/flux-kontext-{tier}": Model(
        frozenset({"prompt", "input_image", "aspect_ratio", "seed", "output_format", "safety_tolerance",
                   "prompt_upsampling"}), KONTEXT_RATIOS, ("jpg", "png"), False) for tier in ("pro", "max")},
    # replicate/cog-flux-kontext predict.py: ``input_image`` required, eleven ratios + match_input_image,
    # webp/jpg/png, one output.
    "black-forest-labs/flux-kontext-dev": Model(
        frozenset({"prompt", "input_image", "aspect_ratio", "num_inference_steps", "guidance", "seed",
                   "output_format", "output_quality", "disable_safety_checker", "go_fast"}),
        ("match_input_image", *FLUX_RATIOS), ("webp", "jpg", "png"), False,
        required=frozenset({"prompt", "input_image"})),
    # flux-2-pro's API page (version 285631b5): input_images (at most 8), match_input_image + custom + nine
    # ratios, resolution, webp/jpg/png, one output. flux-2-flex (which tests add through the operator's
    # catalog:) takes ten images and its sampling settings.
    **{f"black-forest-labs/flux-2-{tier}": Model(
        frozenset({"prompt", "input_images", "aspect_ratio", "resolution", "width", "height", "safety_tolerance",
                   "seed", "output_format", "output_quality", *extra}),
        ("match_input_image", "custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"),
        ("webp", "jpg", "png"), False, max_images=images)
       for tier, images, extra in (("pro", 8, ()), ("flex", 10, ("steps", "guidance", "prompt_upsampling")))},
}
VERSIONS = {"5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637": "black-forest-labs/flux-schnell"}


class Invalid(Exception):
    pass


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    polls_left: int
    error: str | None = None
    status: str = "starting"
    output: Any = None
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ"))


class ReplicateEmulator(Emulator):
    """Replicate's predictions API."""

    def __init__(self, api_key: str = "test-upstream-key") -> None:
        super().__init__(api_key)
        self.predictions: dict[str, Prediction] = {}
        self.duration = 0
        self.data_uris = False
        self._errors: deque[str] = deque()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/models/{owner}/{name}/predictions", self._create),
            web.post("/v1/predictions", self._create),
            web.get("/v1/predictions/{pid}", self._get),
        ]

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        if status == 429:
            message = "Request was throttled. Your rate limit resets in ~30s."
        return {"title": message.split(":")[0], "detail": message, "status": status}

    def reset(self) -> None:
        super().reset()
        self.duration, self.data_uris = 0, False
        self._errors.clear()

    @property
    def creates(self) -> int:
        return len([c for c in self.calls if c.method == "POST"])

    def fail_prediction(self, error: str, times: int = 1) -> None:
        self._errors.extend([error] * times)

    def nsfw(self, times: int = 1) -> None:
        self.fail_prediction(NSFW_ERROR, times)

    # -- routes ------------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if not self.auth_bearer(request):
            return self._problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        body = self.recorded(request).json
        if "owner" in request.match_info:
            model, version = f"{request.match_info['owner']}/{request.match_info['name']}", "official"
            if isinstance(body, dict) and "version" in body:
                return self._problem(422, "Invalid request", "version is not allowed on a model's predictions")
        else:
            version = body.get("version", "") if isinstance(body, dict) else ""
            model = VERSIONS.get(version, "")
        if model not in MODELS:
            return self._problem(404, "Not found", "The requested resource could not be found.")
        prefer = request.headers.get("Prefer")
        if prefer is not None and not re.fullmatch(r"wait(=([1-9]|[1-5][0-9]|60))?", prefer):
            return self._problem(400, "Invalid Prefer header", f"Unsupported Prefer header value: {prefer!r}")
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return self._problem(422, "Input validation failed", "- input: input is required")
        try:
            _validate(MODELS[model], body["input"])
        except Invalid as exc:
            return self._problem(422, "Input validation failed", f"- input: {exc}")
        pid = uuid.uuid4().hex[:26]
        pred = Prediction(pid, model, version, body["input"], self.duration,
                          error=self._errors.popleft() if self._errors else None)
        self.predictions[pid] = pred
        if prefer is not None and pred.polls_left == 0:
            self._finish(pred)
        return web.json_response(self._render(pred), status=201)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if not self.auth_bearer(request):
            return self._problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        pred = self.predictions.get(request.match_info["pid"])
        if pred is None:
            return self._problem(404, "Not found", "The requested resource could not be found.")
        if pred.status in ("starting", "processing"):
            if pred.polls_left <= 0:
                self._finish(pred)
            else:
                pred.polls_left -= 1
                pred.status = "processing"
        return web.json_response(self._render(pred))

    # -- helpers ------------------------------------------------------------------------------------

    def _problem(self, status: int, title: str, detail: str) -> web.Response:
        return web.json_response({"title": title, "detail": detail, "status": status}, status=status)

    def _finish(self, pred: Prediction) -> None:
        if pred.error is not None:
            pred.status = "failed"
            return
        spec, inp = MODELS[pred.model], pred.input
        fmt = inp.get("output_format", spec.formats[0])
        width, height = _size(spec, inp)
        seed = inp.get("seed", zlib.crc32(inp["prompt"].encode()))
        mime = {"jpg": "image/jpeg"}.get(fmt, f"image/{fmt}")
        urls = []
        for i in range(inp.get("num_outputs", 1)):
            data = make_image(width, height, fmt, seed=seed + i)
            urls.append(f"data:{mime};base64,{base64.b64encode(data).decode()}" if self.data_uris
                        else self.host_bytes(data, mime))
        pred.status, pred.output = "succeeded", urls if spec.list_output else urls[0]

    def _render(self, pred: Prediction) -> dict[str, Any]:
        api = f"{self.url}/v1/predictions/{pred.id}"
        return {"id": pred.id, "model": pred.model, "version": pred.version, "input": pred.input,
                "status": pred.status, "output": pred.output, "error": pred.error if pred.status == "failed" else None,
                "logs": "", "metrics": {}, "created_at": pred.created_at,
                "urls": {"get": api, "cancel": f"{api}/cancel", "web": f"https://replicate.com/p/{pred.id}"}}


def _validate(spec: Model, inp: dict[str, Any]) -> None:
    for key in inp:
        if key not in spec.fields:
            raise Invalid(f"Additional property {key} is not allowed")
    if missing := sorted(spec.required - set(inp)):
        raise Invalid(f"{missing[0]} is required")
    if not isinstance(inp.get("prompt"), str):
        raise Invalid("prompt is required")
    if "aspect_ratio" in inp and inp["aspect_ratio"] not in spec.ratios:
        raise Invalid(f"aspect_ratio must be one of the following: {', '.join(spec.ratios)}")
    if "output_format" in inp and inp["output_format"] not in spec.formats:
        raise Invalid(f"output_format must be one of the following: {', '.join(spec.formats)}")
    n = inp.get("num_outputs", 1)
    if not isinstance(n, int) or not 1 <= n <= 4:
        raise Invalid("num_outputs must be less than or equal to 4")
    if "seed" in inp and not isinstance(inp["seed"], int):
        raise Invalid("seed: Invalid type. Expected: integer")
    strength = inp.get("prompt_strength", 0.8)
    if not isinstance(strength, int | float) or not 0 <= strength <= 1:
        raise Invalid("prompt_strength must be between 0 and 1")
    for key in ("image", "input_image", "image_prompt"):
        if key in inp:
            _image(inp[key], key)
    if "input_images" in inp:
        images = inp["input_images"]
        if not isinstance(images, list) or len(images) > spec.max_images:
            raise Invalid(f"input_images: at most {spec.max_images} images")
        for image in images:
            _image(image, "input_images")


def _image(value: Any, key: str) -> tuple[int, int]:
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return 1024, 1024
    if not isinstance(value, str) or not value.startswith("data:image/") or ";base64," not in value:
        raise Invalid(f"{key}: Does not match format 'uri'")
    try:
        with Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1], validate=True))) as image:
            return image.width, image.height
    except Exception as exc:
        raise Invalid(f"{key}: not a readable image") from exc


def _size(spec: Model, inp: dict[str, Any]) -> tuple[int, int]:
    ratio = inp.get("aspect_ratio", "1:1")
    if inp.get("input_images") and ratio == "match_input_image":
        return _image(inp["input_images"][0], "input_images")
    for key in ("input_image", "image"):
        if key in inp and (ratio == "match_input_image" or key == "image"):
            return _image(inp[key], key)
    if ratio == "match_input_image":
        return 1024, 1024
    if ratio in FLUX_RATIOS:
        return FLUX_RATIOS[ratio]
    w, h = (int(x) for x in ratio.split(":"))
    scale = (1024 * 1024 / (w * h)) ** 0.5
    return round(w * scale / 32) * 32, round(h * scale / 32) * 32
