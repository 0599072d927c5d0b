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

Inputs (``libs/client/src/types/endpoints.ts`` @ 381105e, one rule per app in ``_APPS``):

- ``fal-ai/flux/dev``, ``fal-ai/flux/schnell`` (``FluxDevInput``) and ``fal-ai/flux-pro/v1.1``
  (``FluxProV11Input``) take ``image_size`` (an enum or ``{width, height}``) and no image;
- Kontext [pro]/[max] (``fal-ai/flux-pro/kontext``, ``…/kontext/max``: ``FluxKontextInput``) take
  ``aspect_ratio`` (nine ratios) and a required ``image_url`` — with no reference image we call
  their ``/text-to-image`` sub-app, with several their ``/multi`` sub-app (``image_urls``);
- Kontext [dev] (``fal-ai/flux-kontext/dev``: ``DevKontextEditInput``) requires ``image_url`` (one
  image; it has no ``/text-to-image`` or ``/multi`` sub-app) and takes ``resolution_mode`` (``auto``,
  ``match_input`` — its default, the reference's shape — or eleven ratios) instead of
  ``aspect_ratio``.

All take ``num_images``, ``seed`` and ``output_format`` (jpeg/png). ``num_images`` is 1–4 on fal's
model API reference (fal.ai/docs/model-api-reference, e.g. ``flux-pro-kontext-multi``: "Range: 1 to
4"); the generated types state no bound, so we ask for at most 4 per call.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from imagegate.core import errors
from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import dims_for_ratio, fit_within, nearest_ratio, parse_size, requested_ratio
from imagegate.core.job import Call, ImageJob, InputImage, OutputImage, Pending, ProviderResult
from imagegate.providers.base import Adapter, ModelSpec, Reply

# FluxKontextInput.aspect_ratio
_KONTEXT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
# DevKontextEditInput.resolution_mode, less its two modes (``match_input``, the default, is what we want
# when the caller asks for no shape)
_DEV_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
# fal's named sizes (all about one megapixel), used when the caller's shape is one of them.
_NAMED_SIZES = {"1:1": "square_hd", "4:3": "landscape_4_3", "16:9": "landscape_16_9",
                "3:4": "portrait_4_3", "9:16": "portrait_16_9"}
_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg"}
_PARAMS = frozenset({"size", "aspect_ratio", "seed", "output_format"})
_EDIT = frozenset({"generate", "edit"})


@dataclass(frozen=True)
class _App:
    """How one fal app takes its input (see the module docstring for the source of each rule)."""

    spec: ModelSpec
    shape: Literal["image_size", "aspect_ratio", "resolution_mode"]
    """The field that carries the output's shape."""
    ratios: tuple[str, ...] = ()
    sub_apps: bool = False
    """``/text-to-image`` without a reference image, ``/multi`` (``image_urls``) with several."""


# FluxDevInput (flux/dev, flux/schnell), FluxProV11Input: text only, ``image_size``.
_TEXT = _App(ModelSpec(max_n=4, params=_PARAMS), "image_size")
# FluxKontextInput (+ FluxKontextMultiInput, FluxProKontextTextToImageInput): 0–4 images.
_KONTEXT = _App(ModelSpec(actions=_EDIT, max_n=4, max_images=4, prompt_urls=True, params=_PARAMS,
                          ratios=_KONTEXT_RATIOS), "aspect_ratio", _KONTEXT_RATIOS, sub_apps=True)
# DevKontextEditInput: ``image_url`` required (exactly one image), ``resolution_mode``.
_KONTEXT_DEV = _App(ModelSpec(actions=_EDIT, max_n=4, max_images=1, requires_image=True, prompt_urls=True,
                              params=_PARAMS, ratios=_DEV_RATIOS), "resolution_mode", _DEV_RATIOS)
_APPS: dict[str, _App] = {
    "fal-ai/flux/dev": _TEXT,
    "fal-ai/flux/schnell": _TEXT,
    "fal-ai/flux-pro/v1.1": _TEXT,
    "fal-ai/flux-pro/kontext": _KONTEXT,
    "fal-ai/flux-pro/kontext/max": _KONTEXT,
    "fal-ai/flux-kontext/dev": _KONTEXT_DEV,
    "fal-ai/flux-kontext-lora": _KONTEXT_DEV,  # BaseKontextEditInput: the same fields plus ``loras``
}


def _app(upstream_model: str) -> _App:
    """The rules of a listed app; an unlisted one is judged by its family's path."""
    if upstream_model in _APPS:
        return _APPS[upstream_model]
    if upstream_model.startswith("fal-ai/flux-kontext"):
        return _KONTEXT_DEV
    return _KONTEXT if "/kontext" in upstream_model else _TEXT


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
    default_models = {
        "flux-dev": "fal-ai/flux/dev",
        "flux-schnell": "fal-ai/flux/schnell",
        "flux-pro": "fal-ai/flux-pro/v1.1",
        "flux-pro-1.1": "fal-ai/flux-pro/v1.1",
        "flux-kontext-pro": "fal-ai/flux-pro/kontext",
        "flux-kontext-max": "fal-ai/flux-pro/kontext/max",
        "flux-kontext-dev": "fal-ai/flux-kontext/dev",
    }

    def spec(self, upstream_model: str) -> ModelSpec:
        return _app(upstream_model).spec

    def check(self, job: ImageJob, upstream_model: str) -> None:
        if job.output_format and job.output_format.lower() not in _FORMATS:
            raise InvalidRequest(f"output_format {job.output_format!r} is not one of png, jpeg for {job.model}.",
                                 param="output_format")

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.channel.api_key or ''}"}

    async def submit(self, call: Call) -> Pending:
        app, body = self._request(call)
        reply = await self.send("POST", f"{self.base_url}/{app}", json=body, headers=self._headers)
        queued = self.parse(_Submitted, reply)
        return self.pending({"status_url": queued.status_url, "response_url": queued.response_url,
                             "request_id": queued.request_id})

    def _request(self, call: Call) -> tuple[str, dict[str, Any]]:
        job, app, rules = call.job, call.upstream_model, _app(call.upstream_model)
        body: dict[str, Any] = {"prompt": job.prompt, "num_images": call.n}
        if job.seed is not None:
            body["seed"] = job.seed
        if job.output_format:
            body["output_format"] = _FORMATS[job.output_format.lower()]
        if rules.shape == "image_size":
            body["image_size"] = self._image_size(job)
            return app, body
        ratio = requested_ratio(job.size, job.aspect_ratio)
        if ratio is not None:  # nothing asked: not sent (Kontext follows the reference image)
            body[rules.shape] = nearest_ratio(ratio, rules.ratios)
        if rules.sub_apps and not call.images:
            return f"{app}/text-to-image", body
        if rules.sub_apps and len(call.images) > 1:
            return f"{app}/multi", {**body, "image_urls": [_data_uri(i) for i in call.images]}
        return app, {**body, "image_url": _data_uri(call.images[0])}

    @staticmethod
    def _image_size(job: ImageJob) -> str | dict[str, int]:
        # Nothing asked: a square megapixel, as the OpenAI API's default (fal's own is 4:3).
        if job.aspect_ratio:
            ratio = job.aspect_ratio.replace(" ", "")
            if ratio in _NAMED_SIZES:
                return _NAMED_SIZES[ratio]
            w, h = dims_for_ratio(requested_ratio(None, ratio) or 1.0, area=1024 * 1024, multiple=32, lo=256,
                                  hi=1440)
            return {"width": w, "height": h}
        size = parse_size(job.size)
        if size is None:
            return "square_hd"
        w, h = fit_within(*size, multiple=32, lo=256, hi=1440)
        return {"width": w, "height": h}

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
