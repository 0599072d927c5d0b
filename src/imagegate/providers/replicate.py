"""FLUX models on Replicate.

Wire contract: Replicate's HTTP API docs (replicate.com/docs) and the official client
``replicate/replicate-python`` @ 0110c2c5 (``prediction.py``, ``model.py``, ``exceptions.py``):

- official models: ``POST /v1/models/{owner}/{name}/predictions`` with ``{"input": {...}}``;
  a pinned ``owner/name:version`` goes to ``POST /v1/predictions`` with ``version``;
- ``Prefer: wait=N`` (1–60) holds the create request up to N seconds. We ask for a short wait
  (channel option ``wait``, default 5; 0 sends no header) so fast models answer at once without
  tying a connection up for a minute; a prediction not ``succeeded`` by then is polled at
  ``urls.get``. (The SDK treats any status but ``starting`` after a blocking create as final;
  we only trust ``succeeded``, which costs at most one extra GET);
- statuses ``starting``/``processing`` → pending; ``succeeded`` → ``output`` (a URL, a list of
  URLs, or data URIs); ``failed``/``canceled`` → the prediction's ``error`` text;
- errors are RFC 7807 ``{"title", "detail", "status"}``.

Model inputs are data: each model's ``catalog.yaml`` entry (names are ``owner/name``; a pinned
``owner/name:version`` matches the ``owner/name:*`` pattern), with the protocol facts under ``wire:``
read here as ``ReplicateWire`` — the field that takes reference images (one as a string, or a list:
FLUX.2's ``input_images``), where ``strength`` goes, whether ``num_outputs`` is sent, whether a
reference keeps its own shape (``match_input_image``), the output formats. The entries come from:

- ``flux-dev`` and ``flux-schnell``: Replicate's own predictor (``replicate/cog-flux``
  ``predict.py``: eleven aspect ratios, ``num_outputs`` 1–4, ``webp``/``jpg``/``png``, ``flux-dev``
  img2img through an optional ``image`` + ``prompt_strength``);
- ``flux-kontext-dev``: Replicate's own predictor (``replicate/cog-flux-kontext`` ``predict.py``):
  ``input_image`` **required**, ``aspect_ratio`` = ``match_input_image`` (its default) or the same
  eleven ratios, ``webp``/``jpg``/``png``, one output;
- ``flux-1.1-pro``, Kontext [pro]/[max] and ``flux-2-pro`` proxy BFL's API; their inputs are from
  the Replicate model API pages (``flux-1.1-pro/versions/96ccd0e7…/api``: nine ratios + ``custom``,
  an optional ``image_prompt`` (Redux), ``webp``/``jpg``/``png``, one output; ``flux-kontext-pro``: an
  optional ``input_image``, ``match_input_image`` + thirteen ratios, ``jpg``/``png``, one output;
  ``flux-2-pro/versions/285631b5…/api``: ``input_images`` (at most 8), ``match_input_image`` + nine
  ratios, ``webp``/``jpg``/``png``, one output).

A refusal is read from the ``error`` text, which is all Replicate gives: the predictors' NSFW
message and Replicate's ``E005`` "flagged as sensitive" code (``_REFUSAL_MARKERS``).
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagegate.core import errors
from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import nearest_ratio, requested_ratio
from imagegate.core.job import Call, ImageJob, InputImage, OutputImage, Pending, ProviderResult
from imagegate.core.spec import ModelSpec
from imagegate.providers.base import Adapter, Reply

_REFUSAL_MARKERS = ("nsfw", "flagged as sensitive", "(e005)")


class ReplicateWire(BaseModel):
    """The ``wire:`` facts of a ``replicate`` catalog entry (defaults: a model we know nothing of)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    formats: tuple[str, ...] | None = None
    """``output_format`` values the model takes (``jpeg`` is sent as ``jpg``); null: passed as given."""
    image_field: str | None = None
    """The input that takes reference images."""
    image_list: bool = False
    """``image_field`` takes a list (FLUX.2's ``input_images``), not one image."""
    strength_field: str | None = None
    """Where ``strength`` goes with a reference image (``flux-dev``: ``prompt_strength``)."""
    n_field: str | None = None
    """The input that asks for several outputs (``num_outputs``); null: one per prediction."""
    match_input: bool = False
    """With a reference and no shape asked, ``aspect_ratio: match_input_image`` (keep its shape)."""


class _Options(BaseModel):
    """``options:`` of a ``replicate`` channel."""

    model_config = ConfigDict(extra="forbid")

    wait: int = Field(default=5, ge=0, le=60)
    """Seconds the create request may block (``Prefer: wait=N``); 0 sends no header."""


class _Urls(BaseModel):
    get: str


class _Prediction(BaseModel):
    status: str
    output: str | list[str] | None = None
    error: str | None = None
    version: str | None = None
    urls: _Urls


class _Problem(BaseModel):
    detail: str | None = None
    title: str | None = None


class ReplicateAdapter(Adapter):
    """Replicate predictions: create with ``Prefer: wait``, poll ``urls.get`` while not terminal."""

    provider = "replicate"
    key_env = "REPLICATE_API_TOKEN"
    default_base_url = "https://api.replicate.com"
    Wire = ReplicateWire

    Options = _Options
    options: _Options

    def check(self, job: ImageJob, spec: ModelSpec) -> None:
        formats = self.wire(spec).formats
        fmt = _format(job.output_format)
        if fmt and formats is not None and fmt not in formats:
            raise InvalidRequest(f"output_format {job.output_format!r} is not one of {sorted(formats)} for "
                                 f"{job.model}.", param="output_format")
        wire: ReplicateWire = self.wire(spec)
        taken = 0 if wire.image_field is None else len(job.images) if wire.image_list else 1
        if len(job.images) > taken:  # never dropped: an entry whose wire has no room for them is a 400
            raise InvalidRequest(f"The model {job.model!r} takes at most {taken} reference images here.",
                                 param="image")

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.channel.api_key or ''}"}

    async def submit(self, call: Call) -> ProviderResult | Pending:
        model, _, version = call.upstream_model.partition(":")
        body: dict[str, Any] = {"input": self.build_request(call)}
        if version:
            url, body["version"] = f"{self.base_url}/v1/predictions", version
        else:
            url = f"{self.base_url}/v1/models/{model}/predictions"
        headers = dict(self._auth)
        if self.options.wait:
            headers["Prefer"] = f"wait={self.options.wait}"
        reply = await self.send("POST", url, json=body, headers=headers,
                                timeout=max(self.channel.timeout, self.options.wait + 5.0) if self.options.wait
                                else self.channel.timeout)
        return self._outcome(self.parse(_Prediction, reply))

    async def poll(self, handle: dict[str, Any]) -> ProviderResult | Pending:
        reply = await self.send("GET", handle["get"], headers=self._auth)
        return self._outcome(self.parse(_Prediction, reply))

    def build_request(self, call: Call) -> dict[str, Any]:
        """The prediction's ``input``."""
        job, spec = call.job, call.spec
        wire: ReplicateWire = self.wire(spec)
        inp: dict[str, Any] = {"prompt": job.prompt}
        ratio = requested_ratio(job.size, job.aspect_ratio)
        if ratio is not None and spec.aspect_ratios:
            inp["aspect_ratio"] = nearest_ratio(ratio, spec.aspect_ratios)
        elif ratio is not None and job.aspect_ratio:  # a model whose ratios the catalog does not list
            inp["aspect_ratio"] = job.aspect_ratio.replace(" ", "")
        elif ratio is None and call.images and wire.match_input:
            inp["aspect_ratio"] = "match_input_image"  # keep the reference's shape (the model's own value)
        if wire.n_field:
            inp[wire.n_field] = call.n
        if job.seed is not None:
            inp["seed"] = job.seed
        if fmt := _format(job.output_format):
            inp["output_format"] = fmt
        if wire.image_field and call.images:
            uris = [_data_uri(i) for i in call.images]
            inp[wire.image_field] = uris if wire.image_list else uris[0]
            if wire.strength_field and job.strength is not None and "strength" in spec.params:
                inp[wire.strength_field] = job.strength
        return inp

    def _outcome(self, prediction: _Prediction) -> ProviderResult | Pending:
        if prediction.status in ("starting", "processing"):
            return self.pending({"get": prediction.urls.get},
                                progress=20 if prediction.status == "starting" else 60)
        if prediction.status != "succeeded":
            said = prediction.error or f"the prediction was {prediction.status}"
            if any(marker in said.lower() for marker in _REFUSAL_MARKERS):
                raise errors.ContentRefused(f"Replicate refused the content: {said}", reason="SAFETY")
            raise errors.UpstreamError(f"The Replicate prediction {prediction.status}: {said}")
        output = prediction.output
        urls = [output] if isinstance(output, str) else list(output or [])
        return ProviderResult(images=[_output(u) for u in urls], model_version=prediction.version)

    def error_message(self, reply: Reply) -> str:
        try:
            problem = _Problem.model_validate_json(reply.body)
        except ValueError:
            return super().error_message(reply)
        return problem.detail or problem.title or super().error_message(reply)


def _format(value: str | None) -> str | None:
    return {"jpeg": "jpg"}.get(value.lower(), value.lower()) if value else None


def _data_uri(img: InputImage) -> str:
    return f"data:{img.mime};base64,{base64.b64encode(img.data).decode()}"


def _output(url: str) -> OutputImage:
    if url.startswith("data:"):
        head, _, b64 = url.partition(",")
        return OutputImage(b64=b64, mime=head[5:].split(";")[0])
    return OutputImage(url=url)
