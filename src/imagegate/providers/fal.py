"""FLUX models on fal.ai's queue.

Wire contract: fal.ai's queue docs (fal.ai/docs) and the official JS client ``fal-ai/fal-js``
(``libs/client/src/queue.ts``, ``types/common.ts``, ``types/endpoints.ts`` @ 381105e):

- submit ``POST {base}/{app}`` with the model input as the JSON body, ``Authorization: Key``;
  the reply carries ``status_url`` and ``response_url``, which we keep and use as given — fal
  drops an app's sub-path from them (``fal-ai/flux-pro/kontext`` → ``fal-ai/flux-pro``), so they
  cannot be rebuilt from the app id;
- poll ``status_url``: ``IN_QUEUE``/``IN_PROGRESS``, then ``COMPLETED`` — the only terminal status
  the official client knows; a model error surfaces when ``response_url`` is read (a 4xx with a
  ``detail`` list of ``{loc, msg, type}``, or a string). A ``FAILED`` status that third-party code
  mentions is handled too, as a failure;
- result ``{images: [{url, width, height, content_type}], has_nsfw_concepts: [bool], seed}``;
  ``url`` may be a data URI.

Inputs: what each app takes is data (its ``catalog.yaml`` entry; the protocol facts under ``wire:``,
read here as ``FalWire``), from ``libs/client/src/types/endpoints.ts`` @ 381105e and fal's model API
reference (fal.ai/docs/model-api-reference):

- the field that carries the shape (``wire.shape``): ``image_size`` (an enum of named sizes or
  ``{width, height}`` within ``wire.dims``), ``aspect_ratio`` or ``resolution_mode`` (the nearest of
  the entry's ``aspect_ratios``);
- where reference images go: one in ``wire.image_field`` (``image_url``), several in
  ``wire.images_field`` (``image_urls``, a list; every image there when ``image_field`` is null), and
  the sub-app each case calls (Kontext [pro]/[max]: ``/text-to-image`` without an image, ``/multi``
  with several; FLUX.2: ``/edit`` with any);
- whether ``num_images`` is sent (``wire.num_images``; FLUX.2 [pro] has none: one image a call).

``seed`` and ``output_format`` (``wire.formats``: jpeg/png) go as they are. ``num_images`` is 1–4 on
fal's model API reference (e.g. ``flux-pro-kontext-multi``: "Range: 1 to 4"); the generated types
state no bound, so the catalog's ``max_n`` is 4.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagegate.core import errors
from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import MAX_SIDE, dims_for_ratio, fit_within, nearest_ratio, parse_size, requested_ratio
from imagegate.core.job import Call, ImageJob, InputImage, OutputImage, Pending, ProviderResult
from imagegate.core.spec import ModelSpec
from imagegate.providers.base import Adapter, Dims, Reply

# fal's named sizes (all about one megapixel), used when the caller's shape is one of them.
_NAMED_SIZES = {"1:1": "square_hd", "4:3": "landscape_4_3", "16:9": "landscape_16_9",
                "3:4": "portrait_4_3", "9:16": "portrait_16_9"}
_ALIASES = {"jpg": "jpeg"}


class FalWire(BaseModel):
    """The ``wire:`` facts of a ``fal`` catalog entry (defaults: FLUX.1 [dev], text only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: Literal["image_size", "aspect_ratio", "resolution_mode"] = "image_size"
    """The field that carries the output's shape."""
    dims: Dims = Dims()
    num_images: bool = True
    """``num_images`` is sent (``n`` per call up to the entry's ``max_n``)."""
    text_app: str = Field(default="", pattern=r"^(/[\w.-]+)*$")
    """Sub-path of the app called without a reference image."""
    edit_app: str = Field(default="", pattern=r"^(/[\w.-]+)*$")
    """Sub-path called with one reference image."""
    multi_app: str | None = Field(default=None, pattern=r"^(/[\w.-]+)*$")
    """Sub-path called with several (default: ``edit_app``)."""
    image_field: str | None = "image_url"
    """One reference image, as a string; null: every image goes in ``images_field``."""
    images_field: str = "image_urls"
    """Several reference images, as a list."""
    formats: tuple[str, ...] = ("jpeg", "png")


class _Submitted(BaseModel):
    request_id: str
    status_url: str
    response_url: str


class _Status(BaseModel):
    status: str
    error: str | None = None


class _Image(BaseModel):
    url: str
    content_type: str | None = None


class _Result(BaseModel):
    images: list[_Image]
    has_nsfw_concepts: list[bool] = []


class _ErrorItem(BaseModel):
    msg: str = ""
    type: str = ""


class _ErrorBody(BaseModel):
    detail: list[_ErrorItem] | str


class FalAdapter(Adapter):
    """fal.ai's queue: submit, poll ``status_url``, read ``response_url``."""

    provider = "fal"
    key_env = "FAL_KEY"
    default_base_url = "https://queue.fal.run"
    Wire = FalWire

    def check(self, job: ImageJob, spec: ModelSpec) -> None:
        formats = self.wire(spec).formats
        if job.output_format and _format(job.output_format) not in formats:
            raise InvalidRequest(f"output_format {job.output_format!r} is not one of {', '.join(formats)} for "
                                 f"{job.model}.", param="output_format")

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.channel.api_key or ''}"}

    async def submit(self, call: Call) -> Pending:
        app, body = self.build_request(call)
        reply = await self.send("POST", f"{self.base_url}/{app}", json=body, headers=self._headers)
        queued = self.parse(_Submitted, reply)
        return self.pending({"status_url": queued.status_url, "response_url": queued.response_url,
                             "request_id": queued.request_id})

    def build_request(self, call: Call) -> tuple[str, dict[str, Any]]:
        """The app to call (with its sub-path) and the model input."""
        job, spec = call.job, call.spec
        wire: FalWire = self.wire(spec)
        body: dict[str, Any] = {"prompt": job.prompt}
        if wire.num_images:
            body["num_images"] = call.n
        if job.seed is not None:
            body["seed"] = job.seed
        if job.output_format:
            body["output_format"] = _format(job.output_format)
        if wire.shape == "image_size":
            if (size := _image_size(job, wire, bool(call.images))) is not None:
                body["image_size"] = size
        elif (ratio := requested_ratio(job.size, job.aspect_ratio)) is not None and spec.aspect_ratios:
            # nothing asked: not sent (Kontext follows the reference image)
            body[wire.shape] = nearest_ratio(ratio, spec.aspect_ratios)
        app = call.upstream_model
        uris = [_data_uri(i) for i in call.images]
        if not uris:
            return app + wire.text_app, body
        if len(uris) == 1 and wire.image_field is not None:
            return app + wire.edit_app, {**body, wire.image_field: uris[0]}
        sub = wire.edit_app if len(uris) == 1 or wire.multi_app is None else wire.multi_app
        return app + sub, {**body, wire.images_field: uris}

    async def poll(self, handle: dict[str, Any]) -> ProviderResult | Pending:
        reply = await self.send("GET", handle["status_url"], headers=self._headers)
        status = self.parse(_Status, reply)
        if status.status == "IN_QUEUE":
            return self.pending(handle, progress=20)
        if status.status == "IN_PROGRESS":
            return self.pending(handle, progress=60)
        if status.status != "COMPLETED":
            raise errors.UpstreamRejected(f"The fal job ended as {status.status}: {status.error or 'no reason given'}")
        result = self.parse(_Result, await self.send("GET", handle["response_url"], headers=self._headers))
        return self._result(result)

    @staticmethod
    def _result(result: _Result) -> ProviderResult:
        images: list[OutputImage] = []
        failures: list[str] = []
        for i, img in enumerate(result.images):
            # The safety checker blacks out a flagged image: never deliver (or bill) it.
            if i < len(result.has_nsfw_concepts) and result.has_nsfw_concepts[i]:
                failures.append(f"image {i} was flagged by fal's safety checker")
                continue
            if img.url.startswith("data:"):
                head, _, b64 = img.url.partition(",")
                images.append(OutputImage(b64=b64, mime=head[5:].split(";")[0]))
            else:
                images.append(OutputImage(url=img.url, mime=img.content_type))
        if result.images and not images:
            raise errors.ContentRefused("fal's safety checker flagged every image.", reason="SAFETY")
        return ProviderResult(images=images, failures=failures)

    def error_message(self, reply: Reply) -> str:
        body = self._error_body(reply)
        if body is None:
            return super().error_message(reply)
        if isinstance(body.detail, str):
            return body.detail
        return "; ".join(item.msg for item in body.detail if item.msg) or "no detail given"

    def error_for(self, reply: Reply) -> errors.UpstreamError:
        body = self._error_body(reply)
        # fal's model errors are typed (docs.fal.ai/errors): read the type, never the words.
        if body is not None and not isinstance(body.detail, str) and any(
                item.type == "content_policy_violation" for item in body.detail):
            return errors.ContentRefused(f"fal refused the content: {self.error_message(reply)}", reason="SAFETY")
        return super().error_for(reply)

    @staticmethod
    def _error_body(reply: Reply) -> _ErrorBody | None:
        try:
            return _ErrorBody.model_validate_json(reply.body)
        except ValueError:
            return None


def _data_uri(img: InputImage) -> str:
    return f"data:{img.mime};base64,{base64.b64encode(img.data).decode()}"


def _format(value: str) -> str:
    return _ALIASES.get(value.lower(), value.lower())


def _image_size(job: ImageJob, wire: FalWire, with_images: bool) -> str | dict[str, int] | None:
    """``image_size``: a named size when the shape is one of them, else ``{width, height}`` within
    ``wire.dims``. Nothing asked: a square megapixel, as the OpenAI API's default (fal's own is 4:3),
    or nothing at all with a reference image (the model follows it)."""
    d = wire.dims
    hi = d.max_side or MAX_SIDE
    if job.aspect_ratio:
        ratio = job.aspect_ratio.replace(" ", "")
        if ratio in _NAMED_SIZES:
            return _NAMED_SIZES[ratio]
        w, h = dims_for_ratio(requested_ratio(None, ratio) or 1.0, area=1024 * 1024, multiple=d.multiple,
                              lo=d.min_side, hi=hi)
        return {"width": w, "height": h}
    size = parse_size(job.size)
    if size is None:
        return None if with_images else "square_hd"
    w, h = fit_within(*size, multiple=d.multiple, lo=d.min_side, hi=hi, max_pixels=d.max_pixels)
    return {"width": w, "height": h}
