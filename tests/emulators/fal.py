"""Emulator of fal.ai's queue for the FLUX apps (``queue.fal.run``).

Strict about the contract of ``fal-ai/fal-js`` (``queue.ts``, generated endpoint types
``libs/client/src/types/endpoints.ts`` @ 381105e):
``Authorization: Key <key>``; each app's input validated (required fields, enums, ranges,
no unknown fields — refused with fal's 422 ``{"detail": [{loc, msg, type}]}``); the submit reply
``{request_id, status_url, response_url, cancel_url, queue_position, status}`` whose URLs drop the
app's sub-path, as fal's do; ``IN_QUEUE`` → ``IN_PROGRESS`` → ``COMPLETED`` over ``polls`` status
requests; the result ``{images: [{url, width, height, content_type}], has_nsfw_concepts, seed}``
with images hosted here (or data URIs when ``data_uris``).

Failure modes: ``fail()`` (429, 5xx, delays) on any path; ``fail_result(status, detail)`` makes the
next result fetch an error, as fal reports model errors; ``nsfw`` flags every image.
"""

from __future__ import annotations

import base64
import io
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from tests.emulators.base import Emulator, make_image

RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
# DevKontextEditInput.resolution_mode (fal-ai/flux-kontext/dev): the two modes, then eleven ratios.
RESOLUTION_MODES = ("auto", "match_input", "1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16",
                    "9:21")
NAMED_SIZES = {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
               "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576)}
_COMMON = {"prompt", "num_images", "seed", "output_format", "sync_mode"}
_SAFETY = {"safety_tolerance", "enhance_prompt"}
_FLUX2 = {"prompt", "image_size", "seed", "safety_tolerance", "enable_safety_checker", "output_format", "sync_mode"}
APPS: dict[str, set[str]] = {
    "fal-ai/flux/dev": _COMMON | {"image_size", "num_inference_steps", "guidance_scale",
                                  "enable_safety_checker", "acceleration"},
    "fal-ai/flux/schnell": _COMMON | {"image_size", "num_inference_steps", "guidance_scale",
                                      "enable_safety_checker", "acceleration"},
    "fal-ai/flux-pro/v1.1": _COMMON | _SAFETY | {"image_size"},
    **{f"fal-ai/flux-pro/kontext{tier}": _COMMON | _SAFETY | {"aspect_ratio", "guidance_scale", "image_url"}
       for tier in ("", "/max")},
    **{f"fal-ai/flux-pro/kontext{tier}/multi": _COMMON | _SAFETY | {"aspect_ratio", "guidance_scale", "image_urls"}
       for tier in ("", "/max")},
    **{f"fal-ai/flux-pro/kontext{tier}/text-to-image": _COMMON | _SAFETY | {"aspect_ratio", "guidance_scale"}
       for tier in ("", "/max")},
    # DevKontextEditInput: ``image_url`` required, ``resolution_mode`` instead of ``aspect_ratio``, no
    # safety_tolerance; there is no /text-to-image or /multi sub-app.
    "fal-ai/flux-kontext/dev": _COMMON | {"image_url", "resolution_mode", "guidance_scale", "num_inference_steps",
                                          "enable_safety_checker", "acceleration"},
    # FLUX.2 (fal's model API reference): no num_images; reference images only on the /edit sub-app
    # (image_urls, image_size "auto" by default there). [flex] adds its sampling settings.
    **{f"fal-ai/flux-2-{tier}{sub}": _FLUX2 | extra | ({"image_urls"} if sub else set())
       for tier, extra in (("pro", set()), ("max", set()),
                           ("flex", {"guidance_scale", "num_inference_steps", "enable_prompt_expansion"}))
       for sub in ("", "/edit")},
}


class Invalid(Exception):
    def __init__(self, field: str, msg: str, kind: str = "value_error") -> None:
        super().__init__(msg)
        self.detail = [{"loc": ["body", field], "msg": msg, "type": kind}]


@dataclass
class Job:
    app: str
    width: int
    height: int
    n: int
    fmt: str
    seed: int
    polls: int = 0
    result_error: tuple[int, Any] | None = None
    files: list[str] = field(default_factory=list)


class FalEmulator(Emulator):
    """fal's queue: submit, status, result."""

    def __init__(self, api_key: str = "test-upstream-key") -> None:
        super().__init__(api_key)
        self.jobs: dict[str, Job] = {}
        self.polls = 2
        self.nsfw = False
        self.data_uris = False
        self._result_errors: deque[tuple[int, Any]] = deque()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/{owner}/{alias}/requests/{rid}/status", self._status),
            web.get("/{owner}/{alias}/requests/{rid}", self._result),
            web.post("/{app:.+}", self._submit),
        ]

    def error_body(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        return {"detail": message}

    def reset(self) -> None:
        super().reset()
        self.polls, self.nsfw, self.data_uris = 2, False, False
        self._result_errors.clear()

    @property
    def submissions(self) -> int:
        return len([c for c in self.calls if c.method == "POST"])

    def fail_result(self, status: int = 422, detail: Any = None, times: int = 1) -> None:
        """The next ``times`` jobs fail when their result is read (how fal reports model errors)."""
        body = {"detail": detail if detail is not None else [
            {"loc": ["body", "prompt"], "msg": "The model could not process this input.", "type": "value_error"}]}
        self._result_errors.extend([(status, body)] * times)

    # -- routes ------------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Key {self.api_key}"

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"detail": "Unauthorized: wrong or missing 'Key' credentials"}, status=401)
        app = request.match_info["app"]
        if app not in APPS:
            return web.json_response({"detail": f"Application '{app}' not found"}, status=404)
        body = self.recorded(request).json
        try:
            if not isinstance(body, dict):
                raise Invalid("body", "Input should be a valid dictionary", "dict_type")
            job = _validated(app, body)
        except Invalid as exc:
            return web.json_response({"detail": exc.detail}, status=422)
        if self._result_errors:
            job.result_error = self._result_errors.popleft()
        rid = str(uuid.uuid4())
        self.jobs[rid] = job
        # fal's URLs keep only owner/alias: the sub-path of the app is dropped.
        root = f"{self.url}/{'/'.join(app.split('/')[:2])}/requests/{rid}"
        return web.json_response({"request_id": rid, "status": "IN_QUEUE", "queue_position": 0,
                                  "response_url": root, "status_url": f"{root}/status",
                                  "cancel_url": f"{root}/cancel"})

    def _job(self, request: web.Request) -> Job | web.Response:
        if not self._authorized(request):
            return web.json_response({"detail": "Unauthorized"}, status=401)
        job = self.jobs.get(request.match_info["rid"])
        if job is None or not job.app.startswith(f"{request.match_info['owner']}/{request.match_info['alias']}"):
            return web.json_response({"detail": "Request not found"}, status=404)
        return job

    async def _status(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        if isinstance(job, web.Response):
            return job
        job.polls += 1
        root = str(request.url).split("/status")[0]
        urls = {"request_id": request.match_info["rid"], "response_url": root, "status_url": f"{root}/status",
                "cancel_url": f"{root}/cancel"}
        if job.polls < self.polls:
            state = "IN_QUEUE" if job.polls == 1 else "IN_PROGRESS"
            return web.json_response({"status": state, "queue_position": 0, "logs": [], **urls})
        return web.json_response({"status": "COMPLETED", "logs": [], "metrics": {"inference_time": 1.2}, **urls})

    async def _result(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        if isinstance(job, web.Response):
            return job
        if job.polls < self.polls:
            return web.json_response({"detail": "Request is still in progress"}, status=400)
        if job.result_error is not None:
            status, body = job.result_error
            return web.json_response(body, status=status)
        mime = f"image/{job.fmt}"
        images = []
        for i in range(job.n):
            data = make_image(job.width, job.height, job.fmt, seed=job.seed + i,
                              color=(0, 0, 0) if self.nsfw else None)
            url = (f"data:{mime};base64,{base64.b64encode(data).decode()}" if self.data_uris
                   else self.host_bytes(data, mime))
            images.append({"url": url, "width": job.width, "height": job.height, "content_type": mime})
        return web.json_response({"images": images, "has_nsfw_concepts": [self.nsfw] * job.n,
                                  "seed": job.seed, "prompt": "", "timings": {"inference": 1.2}})


def _validated(app: str, body: dict[str, Any]) -> Job:
    allowed = APPS[app]
    for key in body:
        if key not in allowed:
            raise Invalid(key, "Extra inputs are not permitted", "extra_forbidden")
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        raise Invalid("prompt", "Field required", "missing")
    n = body.get("num_images", 1)
    if not isinstance(n, int) or not 1 <= n <= 4:
        raise Invalid("num_images", "Input should be between 1 and 4", "less_than_equal")
    fmt = body.get("output_format", "jpeg")
    if fmt not in ("jpeg", "png"):
        raise Invalid("output_format", "Input should be 'jpeg' or 'png'", "enum")
    seed = body.get("seed", zlib.crc32(body["prompt"].encode()))
    if not isinstance(seed, int):
        raise Invalid("seed", "Input should be a valid integer", "int_type")
    if "image_urls" in allowed and "image_size" in allowed:  # FLUX.2 /edit: "auto" follows the first image
        refs = body.get("image_urls")
        if not isinstance(refs, list) or not refs:
            raise Invalid("image_urls", "Field required", "missing")
        sizes = [_reference_size(ref, i) for i, ref in enumerate(refs)]  # every one must decode
        size = body.get("image_size", "auto")
        width, height = sizes[0] if size == "auto" else _image_size(size)
    elif "image_size" in allowed:
        width, height = _image_size(body.get("image_size", "landscape_4_3"))
    elif "resolution_mode" in allowed:
        width, height = _kontext_dev_size(body)
    else:
        width, height = _kontext_size(app, body)
    return Job(app, width, height, n, fmt, seed)


def _image_size(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        if value not in NAMED_SIZES:
            raise Invalid("image_size", f"Input should be one of {', '.join(NAMED_SIZES)}", "enum")
        return NAMED_SIZES[value]
    if not isinstance(value, dict) or set(value) - {"width", "height"}:
        raise Invalid("image_size", "Input should be an ImageSize or an enum value", "union_tag_invalid")
    width, height = value.get("width", 512), value.get("height", 512)
    if not (isinstance(width, int) and isinstance(height, int) and 1 <= width <= 14142 and 1 <= height <= 14142):
        raise Invalid("image_size", "width and height must be integers up to 14142", "value_error")
    return width, height


def _kontext_size(app: str, body: dict[str, Any]) -> tuple[int, int]:
    ratio = body.get("aspect_ratio")
    if ratio is not None and ratio not in RATIOS:
        raise Invalid("aspect_ratio", f"Input should be one of {', '.join(RATIOS)}", "enum")
    refs: list[Any] = []
    if app.endswith("/multi"):
        refs = body.get("image_urls") or []
        if not isinstance(refs, list) or not refs:
            raise Invalid("image_urls", "Field required", "missing")
    elif not app.endswith("/text-to-image"):
        if "image_url" not in body:
            raise Invalid("image_url", "Field required", "missing")
        refs = [body["image_url"]]
    sizes = [_reference_size(ref, i) for i, ref in enumerate(refs)]
    if ratio is None:
        return sizes[0] if sizes else (1024, 1024)
    w, h = (int(x) for x in ratio.split(":"))
    scale = (1024 * 1024 / (w * h)) ** 0.5
    return round(w * scale / 16) * 16, round(h * scale / 16) * 16


def _kontext_dev_size(body: dict[str, Any]) -> tuple[int, int]:
    """``match_input`` (the default) keeps the reference's size in multiples of 16; ``auto`` is
    modelled the same way; a ratio gives about a megapixel in that shape."""
    mode = body.get("resolution_mode", "match_input")
    if mode not in RESOLUTION_MODES:
        raise Invalid("resolution_mode", f"Input should be one of {', '.join(RESOLUTION_MODES)}", "enum")
    if "image_url" not in body:
        raise Invalid("image_url", "Field required", "missing")
    width, height = _reference_size(body["image_url"], 0)
    if mode in ("auto", "match_input"):
        return max(16, round(width / 16) * 16), max(16, round(height / 16) * 16)
    w, h = (int(x) for x in mode.split(":"))
    scale = (1024 * 1024 / (w * h)) ** 0.5
    return round(w * scale / 16) * 16, round(h * scale / 16) * 16


def _reference_size(ref: Any, index: int) -> tuple[int, int]:
    if not isinstance(ref, str):
        raise Invalid("image_url", "Input should be a valid URL", "url_type")
    if ref.startswith(("http://", "https://")):
        return 1024, 1024
    head, _, data = ref.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise Invalid("image_url", f"image {index}: expected a URL or a base64 data URI", "url_type")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            return image.width, image.height
    except Exception as exc:
        raise Invalid("image_url", f"image {index}: could not be decoded", "image_load_error") from exc

