"""Black Forest Labs FLUX API (``api.bfl.ai``): submit, then poll the returned ``polling_url``.

Wire contract: BFL's API reference (docs.bfl.ai); field rules from the official SDK
(``black-forest-labs/blackforest``: ``types/inputs/*`` for FLUX.1 and Kontext, ``src/bfl/_models.py``
and ``_catalog.py`` for FLUX.2). What each model takes is data: its ``catalog.yaml`` entry, whose
``wire:`` facts this module reads as ``BflWire``.

- Every model is ``POST /v1/<model>`` (or the entry's ``wire.path``); the answer is
  ``{id, polling_url}``. We poll the returned ``polling_url`` (the task may live on a regional host)
  until a terminal status: ``Pending`` is the only non-terminal one. ``Ready`` carries
  ``result.sample``, a signed URL valid ~10 minutes, which the gateway downloads at once.
- The shape goes as ``aspect_ratio`` (snapped to the nearest of the entry's ``aspect_ratios``:
  Kontext, Ultra) or as ``width``/``height`` within the entry's ``wire.dims`` (FLUX.1: multiples of 32
  in 256–1440; FLUX.2: multiples of 16, at least 64, at most 4 MP).
- Reference images are base64 in ``wire.image_field`` (``image_prompt``), or numbered from it
  (``input_image``, ``input_image_2`` … up to the entry's ``max_images``).
- A submit that failed with a 5xx or a timeout is not retried on this channel: BFL may already
  have started (and billed) the task. The gateway may fail over to another channel; our caller
  is billed only for the images delivered.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imagegate.core import errors
from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import MAX_SIDE, fit_within, nearest_ratio, parse_size, requested_ratio
from imagegate.core.job import Call, ImageJob, OutputImage, Pending, ProviderResult
from imagegate.core.spec import ModelSpec
from imagegate.providers.base import Adapter, Dims, Reply

log = logging.getLogger("imagegate.providers.bfl")

_EXTRAS = ("safety_tolerance", "steps", "guidance", "raw")
"""``job.extra`` keys a model takes when its ``params`` name them, sent as they are."""


class BflWire(BaseModel):
    """The ``wire:`` facts of a ``bfl`` catalog entry (defaults: FLUX 1.1 [pro])."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(default=None, pattern=r"^/")
    """Endpoint under the base URL; default ``/v1/<upstream model>``."""
    shape: Literal["aspect_ratio", "dims"] = "dims"
    """How the shape is sent: ``aspect_ratio`` (one of the entry's ``aspect_ratios``) or
    ``width``/``height`` within ``dims``."""
    dims: Dims = Dims()
    image_field: str = "image_prompt"
    numbered: bool = False
    """Images past the first go in ``<image_field>_2``, ``_3`` … (Kontext, FLUX.2)."""
    strength_field: str | None = None
    """Where ``strength`` goes, with a reference image (Ultra: ``image_prompt_strength``)."""
    formats: tuple[str, ...] = ("jpeg", "png")
    upsampling: Literal["prompt_upsampling", "disable_pup"] = "prompt_upsampling"
    """How ``prompt_upsampling`` is sent: as is, or inverted (FLUX.2 [pro]/[max])."""
    safety_tolerance: tuple[int, int] = (0, 6)
    steps: tuple[int, int] = (1, 50)
    guidance: tuple[float, float] = (1.5, 5.0)

    def image_fields(self, count: int) -> list[str]:
        if not self.numbered:
            return [self.image_field][:count]
        return [self.image_field, *(f"{self.image_field}_{i}" for i in range(2, count + 1))][:count]


class _Extras(BaseModel):
    """Model-specific parameters callers may add to the body (``job.extra``): their types here,
    their ranges in the model's ``BflWire``."""

    model_config = ConfigDict(extra="ignore")

    safety_tolerance: int | None = None
    prompt_upsampling: bool | None = None
    steps: int | None = None
    guidance: float | None = None
    raw: bool | None = None

    @field_validator("safety_tolerance", "steps", "guidance", mode="before")
    @classmethod
    def _number_not_flag(cls, value: object) -> object:
        if isinstance(value, bool):  # pydantic would take true as 1
            raise ValueError("must be a number, not true or false")
        return value


def _extras(job: ImageJob, spec: ModelSpec, wire: BflWire) -> _Extras:
    """The extras this model takes (the rest is dropped, so its value does not matter), typed and
    within the model's ranges; ``InvalidRequest`` names the first bad one."""
    try:
        extras = _Extras.model_validate({k: v for k, v in job.extra.items() if k in spec.params})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else None
        raise InvalidRequest(f"{name}: {first['msg']}", param=name) from exc
    for name in ("safety_tolerance", "steps", "guidance"):
        value, (lo, hi) = getattr(extras, name), getattr(wire, name)
        if value is not None and not lo <= value <= hi:
            raise InvalidRequest(f"{name} must be between {lo} and {hi} for {job.model}.", param=name)
    return extras


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
    """BFL's queue API: FLUX.2, FLUX.1 Kontext, FLUX 1.1 [pro] (+ Ultra), FLUX.1 [pro]/[dev]."""

    provider = "bfl"
    key_env = "BFL_API_KEY"
    default_base_url = "https://api.bfl.ai"
    Wire = BflWire

    def check(self, job: ImageJob, spec: ModelSpec) -> None:
        wire: BflWire = self.wire(spec)
        if job.output_format is not None and job.output_format not in wire.formats:
            raise InvalidRequest(f"{job.model} makes {' or '.join(wire.formats)} images, not {job.output_format}.",
                                 param="output_format")
        _extras(job, spec, wire)
        if len(wire.image_fields(len(job.images))) < len(job.images):  # an entry whose wire has fewer fields
            raise InvalidRequest(f"The model {job.model!r} takes one reference image ({wire.image_field}).",
                                 param="image")

    def build_request(self, call: Call) -> dict[str, Any]:
        """The JSON body of ``POST /v1/<model>``."""
        job, spec = call.job, call.spec
        wire: BflWire = self.wire(spec)
        body: dict[str, Any] = {"prompt": job.prompt}
        ratio = requested_ratio(job.size, job.aspect_ratio)
        if ratio is not None and wire.shape == "aspect_ratio" and spec.aspect_ratios:
            body["aspect_ratio"] = nearest_ratio(ratio, spec.aspect_ratios)
        elif ratio is not None and wire.shape == "dims":
            # aspect_ratio wins over size (as everywhere); a size alone keeps its own area.
            wh = None if job.aspect_ratio else parse_size(job.size)
            w, h = wh or (round(1024 * ratio**0.5), round(1024 / ratio**0.5))
            d = wire.dims
            body["width"], body["height"] = fit_within(w, h, multiple=d.multiple, lo=d.min_side,
                                                       hi=d.max_side or MAX_SIDE, max_pixels=d.max_pixels)
        for name, img in zip(wire.image_fields(len(call.images)), call.images, strict=True):
            body[name] = base64.b64encode(img.data).decode()
        if job.strength is not None and call.images and wire.strength_field and "strength" in spec.params:
            body[wire.strength_field] = job.strength
        if job.seed is not None:
            body["seed"] = job.seed
        if job.output_format is not None:
            body["output_format"] = job.output_format
        extras = _extras(job, spec, wire)
        for name in _EXTRAS:
            if (value := getattr(extras, name)) is not None:
                body[name] = value
        if extras.prompt_upsampling is not None:
            if wire.upsampling == "disable_pup":
                body["disable_pup"] = not extras.prompt_upsampling
            else:
                body["prompt_upsampling"] = extras.prompt_upsampling
        return body

    async def submit(self, call: Call) -> Pending:
        body = self.build_request(call)
        path = self.wire(call.spec).path or f"/v1/{call.upstream_model}"
        reply = await self.send("POST", f"{self.base_url}{path}", json=body, headers=self._auth())
        task = self.parse(_Submitted, reply)
        polling_url = task.polling_url or f"{self.base_url}/v1/get_result?id={task.id}"
        upsampled = body.get("prompt_upsampling") is True or body.get("disable_pup") is False
        return self.pending({"id": task.id, "polling_url": polling_url, "upsampled": upsampled})

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
