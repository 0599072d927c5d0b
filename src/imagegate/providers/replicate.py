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

Model inputs (one rule per model in ``_RULES``):

- ``flux-dev`` and ``flux-schnell``: Replicate's own predictor (``replicate/cog-flux``
  ``predict.py``: eleven aspect ratios, ``num_outputs`` 1–4, ``webp``/``jpg``/``png``, ``flux-dev``
  img2img through an optional ``image`` + ``prompt_strength``);
- ``flux-kontext-dev``: Replicate's own predictor (``replicate/cog-flux-kontext`` ``predict.py``):
  ``input_image`` **required**, ``aspect_ratio`` = ``match_input_image`` (its default) or the same
  eleven ratios, ``webp``/``jpg``/``png``, one output;
- ``flux-1.1-pro`` and Kontext [pro]/[max] proxy BFL's API; their inputs are from the Replicate
  model API pages (``replicate.com/black-forest-labs/flux-1.1-pro/versions/96ccd0e7…/api``: nine
  ratios + ``custom``, an optional ``image_prompt`` (Redux), ``webp``/``jpg``/``png``, one output;
  ``flux-kontext-pro``: an optional ``input_image``, ``match_input_image`` + thirteen ratios,
  ``jpg``/``png``, one output).

A refusal is read from the ``error`` text, which is all Replicate gives: the predictors' NSFW
message and Replicate's ``E005`` "flagged as sensitive" code (``_REFUSAL_MARKERS``).
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imagegate.core import errors
from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import nearest_ratio, requested_ratio
from imagegate.core.job import Call, ImageJob, InputImage, OutputImage, Pending, ProviderResult
from imagegate.providers.base import Adapter, ModelSpec, Reply

# cog-flux ASPECT_RATIOS (flux-dev, flux-schnell); cog-flux-kontext's are the same eleven.
_FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
# flux-1.1-pro's aspect_ratio enum, less ``custom``
_PRO_RATIOS = ("1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3")
# flux-kontext-pro/-max's aspect_ratio enum, less ``match_input_image``
_KONTEXT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "4:5", "5:4", "21:9", "9:21", "2:1", "1:2")
_ALL_FORMATS = frozenset({"webp", "jpg", "png"})
_REFUSAL_MARKERS = ("nsfw", "flagged as sensitive", "(e005)")
_PARAMS = frozenset({"size", "aspect_ratio", "seed", "output_format"})


class _Rules(BaseModel):
    spec: ModelSpec
    ratios: tuple[str, ...]
    formats: frozenset[str] | None  # None: passed as given (models we do not know)
    image_field: str | None = None
    n_field: bool = False
    match_input: bool = False

    @model_validator(mode="after")
    def _spec_knows_the_ratios(self) -> _Rules:
        self.spec = self.spec.model_copy(update={"ratios": self.ratios})
        return self


_EDIT = frozenset({"generate", "edit"})
_RULES: dict[str, _Rules] = {
    # cog-flux DevPredictor: optional ``image`` (img2img) + ``prompt_strength``, num_outputs 1–4
    "flux-dev": _Rules(spec=ModelSpec(actions=_EDIT, max_n=4, max_images=1, params=_PARAMS | {"strength"}),
                       ratios=_FLUX_RATIOS, formats=_ALL_FORMATS, image_field="image", n_field=True),
    # cog-flux SchnellPredictor: text only, num_outputs 1–4
    "flux-schnell": _Rules(spec=ModelSpec(max_n=4, params=_PARAMS), ratios=_FLUX_RATIOS, formats=_ALL_FORMATS,
                           n_field=True),
    # Replicate's flux-1.1-pro API page: one optional ``image_prompt`` (Redux guides the composition: a
    # reference for a generation, not an edit), one output
    "flux-1.1-pro": _Rules(spec=ModelSpec(max_images=1, params=_PARAMS), ratios=_PRO_RATIOS, formats=_ALL_FORMATS,
                           image_field="image_prompt"),
    # Replicate's flux-kontext-pro/-max API pages: one optional ``input_image``, jpg/png, one output
    **{name: _Rules(spec=ModelSpec(actions=_EDIT, max_images=1, prompt_urls=True, params=_PARAMS),
                    ratios=_KONTEXT_RATIOS, formats=frozenset({"jpg", "png"}), image_field="input_image",
                    match_input=True)
       for name in ("flux-kontext-pro", "flux-kontext-max")},
    # cog-flux-kontext FluxDevKontextPredictor: ``input_image`` required, one output
    "flux-kontext-dev": _Rules(spec=ModelSpec(actions=_EDIT, max_images=1, requires_image=True, prompt_urls=True,
                                              params=_PARAMS),
                               ratios=_FLUX_RATIOS, formats=_ALL_FORMATS, image_field="input_image",
                               match_input=True),
}
_OTHER = _Rules(spec=ModelSpec(params=_PARAMS), ratios=_FLUX_RATIOS, formats=None)


def _rules(upstream_model: str) -> _Rules:
    name = upstream_model.split(":")[0].rsplit("/", 1)[-1]
    return _RULES.get(name, _OTHER)


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
    default_models = {
        "flux-dev": "black-forest-labs/flux-dev",
        "flux-schnell": "black-forest-labs/flux-schnell",
        "flux-pro": "black-forest-labs/flux-1.1-pro",
        "flux-pro-1.1": "black-forest-labs/flux-1.1-pro",
        "flux-kontext-pro": "black-forest-labs/flux-kontext-pro",
        "flux-kontext-max": "black-forest-labs/flux-kontext-max",
        "flux-kontext-dev": "black-forest-labs/flux-kontext-dev",
    }

    Options = _Options
    options: _Options

    def spec(self, upstream_model: str) -> ModelSpec:
        return _rules(upstream_model).spec

    def check(self, job: ImageJob, upstream_model: str) -> None:
        formats = _rules(upstream_model).formats
        fmt = _format(job.output_format)
        if fmt and formats is not None and fmt not in formats:
            raise InvalidRequest(f"output_format {job.output_format!r} is not one of {sorted(formats)} for "
                                 f"{job.model}.", param="output_format")

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.channel.api_key or ''}"}

    async def submit(self, call: Call) -> ProviderResult | Pending:
        model, _, version = call.upstream_model.partition(":")
        body: dict[str, Any] = {"input": self._input(call)}
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

    def _input(self, call: Call) -> dict[str, Any]:
        job, rules = call.job, _rules(call.upstream_model)
        inp: dict[str, Any] = {"prompt": job.prompt}
        ratio = requested_ratio(job.size, job.aspect_ratio)
        if ratio is not None:
            inp["aspect_ratio"] = nearest_ratio(ratio, rules.ratios)
        elif call.images and rules.match_input:
            inp["aspect_ratio"] = "match_input_image"  # keep the reference's shape (Kontext's own value)
        if rules.n_field:
            inp["num_outputs"] = call.n
        if job.seed is not None:
            inp["seed"] = job.seed
        if fmt := _format(job.output_format):
            inp["output_format"] = fmt
        if rules.image_field and call.images:
            inp[rules.image_field] = _data_uri(call.images[0])
            if rules.image_field == "image" and job.strength is not None:
                inp["prompt_strength"] = job.strength
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
