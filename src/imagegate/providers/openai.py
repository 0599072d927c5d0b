"""OpenAI Images API (and any OpenAI-compatible Images upstream).

Wire contract: the official OpenAPI spec (``openai/openai-openapi``). Each model has
its own rules (sizes, ``n``, quality values, prompt limits); a size the model cannot make is
snapped to the nearest one it can. We always ask the upstream for ``b64_json`` where the model
takes ``response_format`` (DALL·E), so no upstream URL ever needs a second download; the caller's
``response_format`` is honoured by the gateway, whatever the upstream returned.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, model_validator

from imagegate.core.errors import ContentRefused, InvalidRequest, UpstreamError
from imagegate.core.geometry import format_size, nearest_size, parse_ratio, parse_size
from imagegate.core.job import Call, ImageJob, OutputImage, ProviderResult, Usage
from imagegate.providers.base import Adapter, ModelSpec, Reply

_GPT_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
_GPT_PARAMS = frozenset({"size", "aspect_ratio", "quality", "background", "output_format",
                         "output_compression", "moderation", "input_fidelity", "user"})


class _Rules(BaseModel):
    spec: ModelSpec
    sizes: tuple[tuple[int, int], ...] | None  # None: the upstream decides (unknown models)
    qualities: frozenset[str] | None
    max_prompt: int
    takes_response_format: bool

    @model_validator(mode="after")
    def _spec_knows_sizes_and_prompt(self) -> _Rules:
        # The router refuses a longer prompt and describes the sizes from the spec.
        self.spec = self.spec.model_copy(update={"sizes": self.sizes, "max_prompt": self.max_prompt})
        return self


_GPT = _Rules(
    spec=ModelSpec(actions=frozenset({"generate", "edit"}), max_n=10, max_images=16, mask=True,
                   params=_GPT_PARAMS),
    sizes=_GPT_SIZES, qualities=frozenset({"low", "medium", "high", "auto"}), max_prompt=32000,
    takes_response_format=False,
)
_RULES: dict[str, _Rules] = {
    "dall-e-3": _Rules(
        spec=ModelSpec(max_n=1, params=frozenset({"size", "aspect_ratio", "quality", "style", "user"})),
        sizes=((1024, 1024), (1792, 1024), (1024, 1792)), qualities=frozenset({"standard", "hd"}),
        max_prompt=4000, takes_response_format=True,
    ),
    "dall-e-2": _Rules(
        # Its edits are inpainting (the image's transparency or a mask says where): a reference
        # on a generation has no meaning there, so it is refused rather than dropped.
        spec=ModelSpec(actions=frozenset({"generate", "edit"}), max_n=10, max_images=1, mask=True,
                       images_on_generate=False, params=frozenset({"size", "aspect_ratio", "user"})),
        sizes=((256, 256), (512, 512), (1024, 1024)), qualities=None, max_prompt=1000,
        takes_response_format=True,
    ),
}
# Any other model an OpenAI-compatible upstream serves: pass everything, let the upstream judge.
_OTHER = _Rules(
    spec=ModelSpec(actions=frozenset({"generate", "edit"}), max_n=10, max_images=16, mask=True,
                   params=_GPT_PARAMS | {"style", "seed", "negative_prompt"}),
    sizes=None, qualities=None, max_prompt=100_000, takes_response_format=True,
)
# Caller-facing quality words mapped onto what each family accepts.
_QUALITY_ALIASES = {"standard": {"low", "medium", "auto"}, "hd": {"high"}}


def _rules(model: str) -> _Rules:
    if model.startswith(("gpt-image", "chatgpt-image")):
        return _GPT
    return _RULES.get(model, _OTHER)


class _Datum(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class _ImagesResponse(BaseModel):
    created: int | None = None
    data: list[_Datum]
    usage: Usage | None = None
    output_format: str | None = None


class _DecodedDatum(BaseModel):
    # pydantic-core decodes the base64 straight out of the JSON bytes: no multi-megabyte Python
    # string, and ~6x faster than ``base64.b64decode`` (docs/benchmarks.md, scenario 2).
    model_config = ConfigDict(val_json_bytes="base64")

    b64_json: bytes | None = None
    url: str | None = None
    revised_prompt: str | None = None


class _DecodedResponse(_ImagesResponse):
    data: list[_DecodedDatum]  # type: ignore[assignment]


class _ErrorBody(BaseModel):
    class _Error(BaseModel):
        message: str = ""
        code: str | None = None

    error: _Error


# Safety refusals: ``moderation_blocked`` (GPT image models) and ``content_policy_violation``
# (DALL·E), both answered as 400 (observed in issue logs; see providers.md §1).
_REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation"})


class OpenAIAdapter(Adapter):
    provider = "openai"
    key_env = "OPENAI_API_KEY"
    default_base_url = "https://api.openai.com/v1"
    default_models = {"gpt-image-1": "gpt-image-1", "dall-e-3": "dall-e-3", "dall-e-2": "dall-e-2"}

    def spec(self, upstream_model: str) -> ModelSpec:
        return _rules(upstream_model).spec

    def error_for(self, reply: Reply) -> UpstreamError:
        if reply.status == 400:
            try:
                err = _ErrorBody.model_validate_json(reply.body).error
            except ValueError:
                err = None
            if err is not None and err.code in _REFUSAL_CODES:
                return ContentRefused(f"The upstream's safety system refused the request: {err.message}",
                                      reason="SAFETY")
        return super().error_for(reply)

    def check(self, job: ImageJob, upstream_model: str) -> None:
        rules = _rules(upstream_model)  # the prompt's length: ModelSpec.max_prompt, checked by the router
        if job.quality and rules.qualities is not None:
            self._quality(job.quality, rules.qualities, job.model)
        if upstream_model == "dall-e-2" and job.action == "edit" and job.images:
            first = job.images[0]
            if first.mime not in (None, "image/png"):
                raise InvalidRequest("dall-e-2 edits take one square PNG image.", param="image")

    @staticmethod
    def _quality(value: str, allowed: frozenset[str], model: str) -> str:
        if value in allowed:
            return value
        for alias in _QUALITY_ALIASES.get(value, set()) & allowed:
            return alias
        if value in ("low", "medium", "auto") and "standard" in allowed:
            return "standard"
        if value == "high" and "hd" in allowed:
            return "hd"
        raise InvalidRequest(
            f"quality {value!r} is not one of {sorted(allowed)} for {model}.", param="quality"
        )

    def _size(self, job: ImageJob, rules: _Rules) -> str | None:
        if rules.sizes is None:
            return job.size
        if job.aspect_ratio:
            ratio = parse_ratio(job.aspect_ratio)
            wh = nearest_size(int(1024 * ratio), 1024, rules.sizes)
        else:
            parsed = parse_size(job.size)
            if parsed is None:
                return "auto" if rules is _GPT and job.size else None
            wh = nearest_size(*parsed, rules.sizes)
        return format_size(wh)

    @staticmethod
    def _edits(call: Call) -> bool:
        """Whether the call goes to ``/images/edits``: edits, and generations with reference
        images (GPT image models take references there; the generations endpoint has no field
        for them)."""
        return call.job.action == "edit" or bool(call.images)

    def _fields(self, call: Call) -> dict[str, Any]:
        job, rules = call.job, _rules(call.upstream_model)
        fields: dict[str, Any] = {"model": call.upstream_model, "prompt": job.prompt, "n": call.n}
        if size := self._size(job, rules):
            fields["size"] = size
        if job.quality and rules.qualities is not None:
            fields["quality"] = self._quality(job.quality, rules.qualities, job.model)
        elif job.quality and rules is _OTHER:
            fields["quality"] = job.quality
        if rules.takes_response_format:
            fields["response_format"] = "b64_json"
        # The spec takes ``moderation`` on generations only and ``input_fidelity`` on edits only.
        skip = {"size", "aspect_ratio", "quality", "moderation" if self._edits(call) else "input_fidelity"}
        for name in sorted(rules.spec.params - skip):
            value = getattr(job, name, None)
            if value is not None:
                fields[name] = value
        return fields

    async def submit(self, call: Call) -> ProviderResult:
        headers = {"Authorization": f"Bearer {self.channel.api_key or ''}"}
        fields = self._fields(call)
        if self._edits(call):
            reply = await self.send("POST", f"{self.base_url}/images/edits",
                                    data=self._multipart(call, fields), headers=headers)
        else:
            reply = await self.send("POST", f"{self.base_url}/images/generations", json=fields,
                                    headers=headers)
        if call.job.response_format == "url":
            # The image will be stored, so decode now; a caller who asked for base64 gets the
            # upstream's string passed through untouched instead.
            decoded = self._decoded(reply)
            if decoded is not None:
                return decoded
        answer = self.parse(_ImagesResponse, reply)
        mime = f"image/{answer.output_format or call.job.output_format or 'png'}".replace("jpg", "jpeg")
        images = [
            OutputImage(b64=d.b64_json, url=d.url if not d.b64_json else None,
                        mime=mime if d.b64_json else None, revised_prompt=d.revised_prompt)
            for d in answer.data if d.b64_json or d.url
        ]
        return ProviderResult(images=images, usage=answer.usage)

    @staticmethod
    def _decoded(reply: Reply) -> ProviderResult | None:
        try:
            answer = _DecodedResponse.model_validate_json(reply.body)
        except ValueError:
            return None  # not plain base64 (a data URI, say): the generic path copes
        images = [OutputImage(data=d.b64_json, url=d.url if not d.b64_json else None,
                              revised_prompt=d.revised_prompt)
                  for d in answer.data if d.b64_json or d.url]
        return ProviderResult(images=images, usage=answer.usage)

    @staticmethod
    def _multipart(call: Call, fields: dict[str, Any]) -> aiohttp.FormData:
        form = aiohttp.FormData()
        # The official SDK sends several images as repeated ``image[]`` parts; dall-e-2 takes one
        # ``image``.
        name = "image" if call.upstream_model == "dall-e-2" else "image[]"
        for i, img in enumerate(call.images):
            ext = img.mime.split("/")[-1]
            form.add_field(name, img.data, filename=f"image{i}.{ext}", content_type=img.mime)
        if call.mask is not None:
            form.add_field("mask", call.mask.data, filename="mask.png", content_type="image/png")
        for key, value in fields.items():
            form.add_field(key, str(value))
        return form
