"""Volcengine Ark / BytePlus ModelArk: Seedream 4.0, Seedream 3.0 t2i and SeedEdit 3.0.

Wire contract: the official SDK (``volcengine/volcengine-python-sdk``,
``volcenginesdkarkruntime/resources/images/images.py``): one synchronous, non-streamed
``POST /images/generations``. Choices:

- ``n``: the SDK documents ``sequential_image_generation: "auto"`` as "the model decides whether
  to return multiple images and how many based on the user's prompt", with ``max_images`` only a
  ceiling. It cannot promise ``n`` images, so we send ``"disabled"`` (one image per call) and
  the gateway fans ``n`` out in parallel.
- ``data[]`` may mix images and ``{"error": {"code", "message"}}`` items: the images are
  delivered and billed, the errors go to ``ProviderResult.failures``; an answer with no image at
  all is raised here with the upstream's own reason (``*SensitiveContentDetected`` → content
  refusal).
- We ask for ``b64_json`` (no second download from the TOS bucket) and ``watermark: false``
  unless the caller sets ``watermark``.
- Sizes: Seedream 4.0 takes ``1K``/``2K``/``4K`` or ``WxH`` with a total between 1280×720 and
  4096×4096; Seedream 3.0 ``WxH`` with sides 512–2048; SeedEdit only ``adaptive`` (the
  output follows the input), so ``size`` is dropped there. Ranges from [ARK-3P] mirrors.
- ``guidance_scale`` is sent to the 3.0 models only ([ARK-3P]: Seedream 4.0 ignores it).

The default host is BytePlus (``ark.ap-southeast.bytepluses.com``); the Volcengine China host is
``base_url: https://ark.cn-beijing.volces.com/api/v3``.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from pydantic import BaseModel

from imagegate.core import errors
from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import dims_for_ratio, fit_within, parse_ratio, parse_size
from imagegate.core.job import Call, ImageJob, InputImage, OutputImage, ProviderResult
from imagegate.providers.base import Adapter, ModelSpec, Reply

SEEDREAM4_PIXELS = (1280 * 720, 4096 * 4096)
_IMAGE_SIZE_AREA = {"1K": 1024 * 1024, "2K": 2048 * 2048, "4K": 4096 * 4096}
_SEEDREAM4 = ModelSpec(actions=frozenset({"generate", "edit"}), max_n=1, max_images=10,
                       params=frozenset({"size", "aspect_ratio", "image_size", "seed", "watermark"}))
_SEEDREAM3 = ModelSpec(max_n=1, params=frozenset({"size", "aspect_ratio", "seed", "guidance_scale",
                                                   "watermark"}))
_SEEDEDIT = ModelSpec(actions=frozenset({"generate", "edit"}), max_n=1, max_images=1, requires_image=True,
                      params=frozenset({"seed", "guidance_scale", "watermark"}))


def _family(model: str) -> str:
    if "seededit" in model:
        return "seededit"
    return "seedream3" if model.startswith("doubao-seedream-3") else "seedream4"


class _ItemError(BaseModel):
    code: str = ""
    message: str = ""


class _Datum(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    size: str | None = None
    error: _ItemError | None = None


class _ImagesResponse(BaseModel):
    data: list[_Datum]


class _Error(BaseModel):
    error: _ItemError


def _refusal(err: _ItemError) -> errors.UpstreamError | None:
    if "SensitiveContent" in err.code:
        return errors.ContentRefused(f"The upstream's content filter refused the request ({err.code}: "
                                     f"{err.message}).", reason="SAFETY",
                                     prompt_blocked=err.code.startswith("InputText"))
    return None


class ArkAdapter(Adapter):
    """Seedream / SeedEdit through Ark's OpenAI-shaped ``/images/generations``."""

    provider = "ark"
    key_env = "ARK_API_KEY"
    default_base_url = "https://ark.ap-southeast.bytepluses.com/api/v3"
    default_models = {m: m for m in ("doubao-seedream-4-0-250828", "doubao-seededit-3-0-i2i-250628",
                                     "doubao-seedream-3-0-t2i-250415")}

    def spec(self, upstream_model: str) -> ModelSpec:
        return {"seedream4": _SEEDREAM4, "seedream3": _SEEDREAM3, "seededit": _SEEDEDIT}[_family(upstream_model)]

    def check(self, job: ImageJob, upstream_model: str) -> None:
        flag(job, "watermark")
        guidance(job)
        self._size(job, upstream_model)  # sizes out of reach are 400s before any call

    @staticmethod
    def _size(job: ImageJob, upstream_model: str) -> str | None:
        family = _family(upstream_model)
        if family == "seededit":
            return "adaptive"
        wh = parse_size(job.size)
        if job.aspect_ratio:
            area = _IMAGE_SIZE_AREA[job.image_size or "2K"] if family == "seedream4" else 1024 * 1024
            wh = dims_for_ratio(parse_ratio(job.aspect_ratio), area=area, multiple=8, lo=64, hi=16384)
        if family == "seedream3":
            return None if wh is None else "{}x{}".format(*fit_within(*wh, multiple=8, lo=512, hi=2048))
        if wh is None:
            return job.image_size
        if job.image_size and not job.aspect_ratio:
            scale = math.sqrt(_IMAGE_SIZE_AREA[job.image_size] / (wh[0] * wh[1]))
            wh = (round(wh[0] * scale), round(wh[1] * scale))
        return "{}x{}".format(*_seedream4_pixels(*wh, param="aspect_ratio" if job.aspect_ratio else "size"))

    def body(self, call: Call) -> dict[str, Any]:
        job, family = call.job, _family(call.upstream_model)
        body: dict[str, Any] = {"model": call.upstream_model, "prompt": job.prompt,
                                "response_format": "b64_json", "watermark": flag(job, "watermark") or False}
        if size := self._size(job, call.upstream_model):
            body["size"] = size
        if family == "seededit":
            body["image"] = _data_uri(call.images[0])
        elif call.images:
            body["image"] = [_data_uri(img) for img in call.images]
        if family == "seedream4":
            body["sequential_image_generation"] = "disabled"
        if job.seed is not None:  # Ark takes 0..2^31-1 (-1: random): a negative int32 keeps its low 31 bits
            body["seed"] = job.seed & 0x7FFFFFFF
        if family != "seedream4" and (scale := guidance(job)) is not None:
            body["guidance_scale"] = scale
        return body

    async def submit(self, call: Call) -> ProviderResult:
        reply = await self.send("POST", f"{self.base_url}/images/generations", json=self.body(call),
                                headers={"Authorization": f"Bearer {self.channel.api_key or ''}"})
        answer = self.parse(_ImagesResponse, reply)
        images = [OutputImage(b64=d.b64_json, url=None if d.b64_json else d.url)
                  for d in answer.data if d.error is None and (d.b64_json or d.url)]
        failed = [d.error for d in answer.data if d.error is not None]
        if not images and failed:
            raise _refusal(failed[0]) or errors.NoImageReturned(
                "; ".join(f"{e.code}: {e.message}" for e in failed), reason="OTHER")
        return ProviderResult(images=images, failures=[f"{e.code}: {e.message}" for e in failed])

    def _error(self, reply: Reply) -> _ItemError | None:
        try:
            return _Error.model_validate_json(reply.body).error
        except ValueError:
            return None

    def error_message(self, reply: Reply) -> str:
        err = self._error(reply)
        if err is None:
            return reply.body[:300].decode("utf-8", "replace") or f"HTTP {reply.status}"
        return f"{err.code}: {err.message}" if err.code else err.message

    def error_for(self, reply: Reply) -> errors.UpstreamError:
        err = self._error(reply)
        refused = _refusal(err) if err is not None and reply.status < 500 else None
        return refused or super().error_for(reply)


def flag(job: ImageJob, name: str) -> bool | None:
    """A boolean extra as JSON (``true``) or as a multipart edit field (``"true"``) sends it."""
    value = job.extra.get(name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidRequest(f"{name} must be true or false.", param=name)


def guidance(job: ImageJob) -> float | None:
    """``guidance_scale`` in [1, 10], as a JSON number or a multipart edit field."""
    value = job.extra.get("guidance_scale")
    if value is None:
        return None
    try:
        scale = float(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else -1.0
    except ValueError:
        scale = -1.0
    if not 1 <= scale <= 10:
        raise InvalidRequest("guidance_scale must be a number between 1 and 10.", param="guidance_scale")
    return scale


def _data_uri(img: InputImage) -> str:
    return f"data:{img.mime};base64,{base64.b64encode(img.data).decode()}"


def _seedream4_pixels(w: int, h: int, *, param: str) -> tuple[int, int]:
    """Scale ``w``×``h`` (shape kept) into Seedream 4.0's pixel range; sides multiples of 8."""
    if not 1 / 16 <= w / h <= 16:
        raise InvalidRequest("Seedream 4.0 takes aspect ratios between 1:16 and 16:1.", param=param)
    lo, hi = SEEDREAM4_PIXELS
    scale = math.sqrt(min(max(w * h, lo), hi) / (w * h))
    for rnd in (round, math.ceil, math.floor):
        out = int(rnd(w * scale / 8) * 8), int(rnd(h * scale / 8) * 8)
        if lo <= out[0] * out[1] <= hi:
            return out
    return out
