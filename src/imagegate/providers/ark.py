"""Volcengine Ark / BytePlus ModelArk: Seedream and SeedEdit.

Wire contract: the official SDK (``volcengine/volcengine-python-sdk``,
``volcenginesdkarkruntime/resources/images/images.py``): one synchronous, non-streamed
``POST /images/generations``, OpenAI-shaped (``imagegate.wire.openai_images``) with Ark's own
fields. What each model accepts (references, sizes and their bounds, ``image_size`` tiers,
parameters) is the catalog's (``catalog.yaml``, section ``ark``). Choices:

- ``n``: the SDK documents ``sequential_image_generation: "auto"`` as "the model decides whether
  to return multiple images and how many based on the user's prompt", with ``max_images`` only a
  ceiling. It cannot promise ``n`` images, so on the models that take the field
  (``wire.sequential``: Seedream 4.x) we send ``"disabled"`` (one image per call) and the gateway
  fans ``n`` out in parallel.
- ``data[]`` may mix images and ``{"error": {"code", "message"}}`` items: the images are
  delivered and billed, the errors go to ``ProviderResult.failures``; an answer with no image at
  all is raised here with the upstream's own reason (``*SensitiveContentDetected`` → content
  refusal).
- We ask for ``b64_json`` (no second download from the TOS bucket) and ``watermark: false``
  unless the caller sets ``watermark``.
- Sizes: ``image_size`` alone is sent as the tier (``2K``); ``size`` or ``aspect_ratio`` become
  ``WxH`` scaled into the model's ``size_bounds`` (an aspect ratio at the tier's area, 2K by
  default, or ~1 MP on a model without tiers); a model with a fixed size (``wire.fixed_size``:
  SeedEdit's ``adaptive``, the output follows the input) always gets that.

The default host is BytePlus (``ark.ap-southeast.bytepluses.com``); the Volcengine China host is
``base_url: https://ark.cn-beijing.volces.com/api/v3``.
"""

from __future__ import annotations

import base64
import math

from pydantic import BaseModel, ConfigDict

from imagegate.core import errors
from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import dims_for_ratio, format_size, parse_ratio, parse_size
from imagegate.core.job import Call, ImageJob, InputImage, OutputImage, ProviderResult
from imagegate.core.spec import ModelSpec
from imagegate.providers.base import Adapter, Reply
from imagegate.wire.openai_images import ErrorBody, ErrorDetail, ImageDatum, ImagesRequest

_TIER_AREA = {"1K": 1024 * 1024, "2K": 2048 * 2048, "4K": 4096 * 4096}
_DEFAULT_TIER = "2K"
_RATIO_AREA = 1024 * 1024
"""An aspect ratio on a model without ``image_size`` tiers is drawn at about one megapixel."""


class ArkWire(BaseModel):
    """A catalog entry's ``wire:`` for the ``ark`` protocol."""

    model_config = ConfigDict(extra="forbid")

    fixed_size: str | None = None
    """The ``size`` always sent (SeedEdit 3.0: ``adaptive``)."""
    one_image: bool = False
    """``image`` is one string, not a list (SeedEdit 3.0)."""
    sequential: bool = False
    """The model takes ``sequential_image_generation`` (group generation): ``disabled`` is sent."""


class ArkRequest(ImagesRequest):
    """The body the SDK's ``images.generate`` sends: OpenAI's fields plus Ark's."""

    model_config = ConfigDict(extra="forbid")

    image: str | list[str] | None = None
    seed: int | None = None
    guidance_scale: float | None = None
    watermark: bool | None = None
    sequential_image_generation: str | None = None


class _Datum(ImageDatum):
    size: str | None = None
    error: ErrorDetail | None = None


class _Answer(BaseModel):
    data: list[_Datum]


def _refusal(err: ErrorDetail) -> errors.UpstreamError | None:
    code = err.code or ""
    if "SensitiveContent" in code:
        return errors.ContentRefused(f"The upstream's content filter refused the request ({code}: "
                                     f"{err.message}).", reason="SAFETY",
                                     prompt_blocked=code.startswith("InputText"))
    return None


def _failure(err: ErrorDetail) -> str:
    return f"{err.code or ''}: {err.message}"


class ArkAdapter(Adapter):
    """Seedream / SeedEdit through Ark's OpenAI-shaped ``/images/generations``."""

    provider = "ark"
    key_env = "ARK_API_KEY"
    default_base_url = "https://ark.ap-southeast.bytepluses.com/api/v3"
    Wire = ArkWire

    def check(self, job: ImageJob, spec: ModelSpec) -> None:
        flag(job, "watermark")
        guidance(job)
        self._size(job, spec, self.wire(spec))  # sizes out of reach are 400s before any call

    @staticmethod
    def _size(job: ImageJob, spec: ModelSpec, wire: ArkWire) -> str | None:
        if wire.fixed_size is not None:
            return wire.fixed_size
        tiers = spec.image_sizes and "image_size" in spec.params
        tier = job.image_size if tiers else None
        wh = parse_size(job.size) if "size" in spec.params else None
        if job.aspect_ratio and "aspect_ratio" in spec.params:
            area = _TIER_AREA[tier or _DEFAULT_TIER] if tiers else _RATIO_AREA
            wh = dims_for_ratio(parse_ratio(job.aspect_ratio), area=area, multiple=8, lo=64, hi=16384)
        elif wh is not None and tier:
            scale = math.sqrt(_TIER_AREA[tier] / (wh[0] * wh[1]))  # the shape asked for, at the tier's area
            wh = (round(wh[0] * scale), round(wh[1] * scale))
        if wh is None:
            return tier
        if spec.size_bounds is not None:
            wh = spec.size_bounds.fit(*wh, param="aspect_ratio" if job.aspect_ratio else "size")
        return format_size(wh)

    def build_request(self, call: Call) -> ArkRequest:
        job, spec = call.job, call.spec
        wire: ArkWire = self.wire(spec)
        image: str | list[str] | None = None
        if call.images:
            image = _data_uri(call.images[0]) if wire.one_image else [_data_uri(img) for img in call.images]
        seed = None
        if job.seed is not None and "seed" in spec.params:  # Ark takes 0..2^31-1 (-1: random): a negative
            seed = job.seed & 0x7FFFFFFF                     # int32 keeps its low 31 bits
        return ArkRequest(
            model=call.upstream_model, prompt=job.prompt, response_format="b64_json",
            watermark=flag(job, "watermark") or False, size=self._size(job, spec, wire), image=image,
            sequential_image_generation="disabled" if wire.sequential else None, seed=seed,
            guidance_scale=guidance(job) if "guidance_scale" in spec.params else None,
        )

    async def submit(self, call: Call) -> ProviderResult:
        reply = await self.send("POST", f"{self.base_url}/images/generations", json=self.build_request(call).body(),
                                headers={"Authorization": f"Bearer {self.channel.api_key or ''}"})
        answer = self.parse(_Answer, reply)
        images = [OutputImage(b64=d.b64_json, url=None if d.b64_json else d.url)
                  for d in answer.data if d.error is None and (d.b64_json or d.url)]
        failed = [d.error for d in answer.data if d.error is not None]
        if not images and failed:
            raise _refusal(failed[0]) or errors.NoImageReturned("; ".join(map(_failure, failed)), reason="OTHER")
        return ProviderResult(images=images, failures=[_failure(e) for e in failed])

    def _error(self, reply: Reply) -> ErrorDetail | None:
        try:
            return ErrorBody.model_validate_json(reply.body).error
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
