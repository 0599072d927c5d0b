"""Black Forest Labs FLUX API (``api.bfl.ai``): submit, then poll the returned ``polling_url``.

Wire contract: BFL's API reference (docs.bfl.ai); field rules from the official SDK
(``black-forest-labs/blackforest`` ``types/inputs/*``).

- Every model is ``POST /v1/<model>``; the answer is ``{id, polling_url}``. We poll the returned
  ``polling_url`` (the task may live on a regional host) until a terminal status: ``Pending`` is
  the only non-terminal one. ``Ready`` carries ``result.sample``, a signed URL valid ~10 minutes,
  which the gateway downloads at once.
- Kontext (``flux-kontext-*``) and Ultra take ``aspect_ratio`` (snapped to the nearest of 21:9 …
  9:21); the other FLUX.1 models take ``width``/``height``, multiples of 32 in 256–1440.
- Kontext takes up to four reference images (``input_image``, ``input_image_2..4``, base64);
  pro/dev/ultra take one as ``image_prompt``. ``flux-kontext-dev`` needs one.
- A submit that failed with a 5xx or a timeout is not retried on this channel: BFL may already
  have started (and billed) the task. The gateway may fail over to another channel; our caller
  is billed only for the images delivered.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imagegate.core import errors
from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import fit_within, nearest_ratio, parse_size, requested_ratio
from imagegate.core.job import Call, ImageJob, OutputImage, Pending, ProviderResult
from imagegate.providers.base import Adapter, ModelSpec, Reply

log = logging.getLogger("imagegate.providers.bfl")

RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
_COMMON = frozenset({"size", "aspect_ratio", "seed", "output_format", "safety_tolerance", "prompt_upsampling"})
_KONTEXT_IMAGES = ("input_image", "input_image_2", "input_image_3", "input_image_4")


@dataclass(frozen=True)
class _Rules:
    spec: ModelSpec
    shape: Literal["ratio", "dims"]
    image_fields: tuple[str, ...]
    extras: tuple[str, ...] = ()
    """``job.extra`` keys this model takes, sent as they are (validated by ``_Extras``)."""


def _kontext(requires_image: bool) -> _Rules:
    return _Rules(ModelSpec(actions=frozenset({"generate", "edit"}), max_n=1, max_images=4,
                            requires_image=requires_image, prompt_urls=True, params=_COMMON, ratios=RATIOS),
                  "ratio", _KONTEXT_IMAGES)


_DIMS = _Rules(ModelSpec(max_n=1, max_images=1, params=_COMMON), "dims", ("image_prompt",))
_DIMS_STEPS = _Rules(ModelSpec(max_n=1, max_images=1, params=_COMMON | {"steps", "guidance"}),
                     "dims", ("image_prompt",), ("steps", "guidance"))
_RULES: dict[str, _Rules] = {
    "flux-kontext-dev": _kontext(requires_image=True),
    "flux-pro-1.1-ultra": _Rules(ModelSpec(max_n=1, max_images=1, params=_COMMON | {"strength", "raw"},
                                           ratios=RATIOS),
                                 "ratio", ("image_prompt",), ("raw",)),
    "flux-dev": _DIMS_STEPS,
    "flux-pro": _DIMS_STEPS,
}


def _rules(model: str) -> _Rules:
    if model in _RULES:
        return _RULES[model]
    return _kontext(requires_image=False) if model.startswith("flux-kontext") else _DIMS


class _Extras(BaseModel):
    """Model-specific parameters callers may add to the body (``job.extra``)."""

    model_config = ConfigDict(extra="ignore")

    safety_tolerance: int | None = Field(default=None, ge=0, le=6)
    prompt_upsampling: bool | None = None
    steps: int | None = Field(default=None, ge=1, le=50)
    guidance: float | None = Field(default=None, ge=1.5, le=5.0)
    raw: bool | None = None

    @field_validator("safety_tolerance", "steps", "guidance", mode="before")
    @classmethod
    def _number_not_flag(cls, value: object) -> object:
        if isinstance(value, bool):  # pydantic would take true as 1
            raise ValueError("must be a number, not true or false")
        return value


class _Submitted(BaseModel):
    id: str
    polling_url: str | None = None


class _Sample(BaseModel):
    sample: str
    prompt: str | None = None


class _Task(BaseModel):
    status: str
    result: _Sample | None = None
    progress: float | None = None
    details: Any = None


class _DetailItem(BaseModel):
    loc: list[str | int] = Field(default_factory=list)
    msg: str = ""


class _ErrorBody(BaseModel):
    """FastAPI's ``{"detail": "..."}`` or ``{"detail": [{loc, msg, type}]}``; the SDK also reads
    ``message`` and ``error``."""

    detail: str | list[_DetailItem] | None = None
    message: str | None = None
    error: str | None = None


class BflAdapter(Adapter):
    """BFL's queue API for FLUX.1 Kontext, FLUX 1.1 [pro] (+ Ultra), FLUX.1 [pro]/[dev]."""

    provider = "bfl"
    key_env = "BFL_API_KEY"
    default_base_url = "https://api.bfl.ai"
    default_models = {
        "flux-kontext-pro": "flux-kontext-pro",
        "flux-kontext-max": "flux-kontext-max",
        "flux-kontext-dev": "flux-kontext-dev",
        # Plain "flux" is BFL's general text-to-image flagship of the FLUX.1 line.
        "flux": "flux-pro-1.1",
        "flux-dev": "flux-dev",
        "flux-pro": "flux-pro",
        "flux-pro-1.1": "flux-pro-1.1",
        "flux-pro-1.1-ultra": "flux-pro-1.1-ultra",
    }

    def spec(self, upstream_model: str) -> ModelSpec:
        return _rules(upstream_model).spec

    def check(self, job: ImageJob, upstream_model: str) -> None:
        if job.output_format not in (None, "png", "jpeg"):
            raise InvalidRequest(f"{job.model} makes png or jpeg images, not {job.output_format}.",
                                 param="output_format")
        taken = _rules(upstream_model).spec.params
        try:  # only what this model takes: the rest is dropped, so its value does not matter
            _Extras.model_validate({k: v for k, v in job.extra.items() if k in taken})
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else None
            raise InvalidRequest(f"{name}: {first['msg']}", param=name) from exc

    def _body(self, call: Call) -> dict[str, Any]:
        job, rules = call.job, _rules(call.upstream_model)
        body: dict[str, Any] = {"prompt": job.prompt}
        ratio = requested_ratio(job.size, job.aspect_ratio)
        if rules.shape == "ratio" and ratio is not None:
            body["aspect_ratio"] = nearest_ratio(ratio, RATIOS)
        elif rules.shape == "dims" and ratio is not None:
            # aspect_ratio wins over size (as everywhere); a size alone keeps its own area.
            wh = None if job.aspect_ratio else parse_size(job.size)
            w, h = wh or (round(1024 * ratio**0.5), round(1024 / ratio**0.5))
            body["width"], body["height"] = fit_within(w, h, multiple=32, lo=256, hi=1440)
        for name, img in zip(rules.image_fields, call.images, strict=False):
            body[name] = base64.b64encode(img.data).decode()
        if job.strength is not None and call.images and "strength" in rules.spec.params:
            body["image_prompt_strength"] = job.strength
        if job.seed is not None:
            body["seed"] = job.seed
        if job.output_format is not None:
            body["output_format"] = job.output_format
        extras = _Extras.model_validate({k: v for k, v in job.extra.items() if k in rules.spec.params})
        for name in ("safety_tolerance", "prompt_upsampling", *rules.extras):
            if (value := getattr(extras, name)) is not None:
                body[name] = value
        return body

    async def submit(self, call: Call) -> Pending:
        body = self._body(call)
        reply = await self.send("POST", f"{self.base_url}/v1/{call.upstream_model}", json=body,
                                headers=self._auth())
        task = self.parse(_Submitted, reply)
        polling_url = task.polling_url or f"{self.base_url}/v1/get_result?id={task.id}"
        return self.pending({"id": task.id, "polling_url": polling_url,
                             "upsampled": bool(body.get("prompt_upsampling"))})

    async def poll(self, handle: dict[str, Any]) -> ProviderResult | Pending:
        url = str(handle["polling_url"])
        if not self._ours(url):  # never send our key to a host that is not BFL's
            url = f"{self.base_url}/v1/get_result?id={handle['id']}"
        try:
            reply = await self.send("GET", url, headers=self._auth())
        except errors.UpstreamRejected as exc:  # a 404/422 on a poll: the task is gone
            raise errors.UpstreamError(f"BFL lost the task {handle['id']}: {exc.message}") from exc
        task = self.parse(_Task, reply)
        if task.status == "Pending":
            done = task.progress if task.progress is not None else 0.0
            return self.pending(handle, progress=20 + int(75 * min(1.0, done if done <= 1 else done / 100)))
        if task.status == "Ready" and task.result is not None:
            revised = task.result.prompt if handle.get("upsampled") else None
            return ProviderResult(images=[OutputImage(url=task.result.sample, revised_prompt=revised)])
        details = f": {task.details}" if task.details else ""
        if task.status in ("Request Moderated", "Content Moderated"):
            what = "the request (prompt or input image)" if task.status == "Request Moderated" else "the image"
            raise errors.ContentRefused(f"BFL's moderation rejected {what} ({task.status}){details}",
                                        reason=task.status, prompt_blocked=task.status == "Request Moderated")
        # "Error", "Task not found", or a status this adapter does not know: terminal.
        raise errors.UpstreamError(f"The BFL task ended with status {task.status!r}{details}")

    def _auth(self) -> dict[str, str]:
        return {"x-key": self.channel.api_key or ""}

    def _ours(self, url: str) -> bool:
        parts, base = urlsplit(url), urlsplit(self.base_url)
        host = parts.hostname or ""
        if host == base.hostname and parts.scheme == base.scheme:
            return True
        return parts.scheme == "https" and (host == "bfl.ai" or host.endswith(".bfl.ai"))

    def error_message(self, reply: Reply) -> str:
        try:
            body = _ErrorBody.model_validate_json(reply.body)
        except ValueError:
            return super().error_message(reply)
        if isinstance(body.detail, list):
            return "; ".join(f"{'.'.join(str(p) for p in d.loc if p != 'body')}: {d.msg}" for d in body.detail)
        return body.detail or body.message or body.error or super().error_message(reply)

    def error_for(self, reply: Reply) -> errors.UpstreamError:
        if reply.status == 402:
            # Out of credits is this channel's problem, not the request's: another channel (another
            # BFL account) may still have credits, so it is a retryable "unavailable".
            where = f"bfl channel {self.channel.name!r}"
            log.error("%s is out of credits: %s", where, self.error_message(reply))
            return errors.UpstreamUnavailable(f"The upstream for this model is out of credits ({where}).")
        return super().error_for(reply)
