"""OpenAI Images API (and any OpenAI-compatible Images upstream).

Wire contract: the official OpenAPI spec (``openai/openai-openapi``) and SDK
(``openai/openai-python``); the wire models are ``imagegate.wire.openai_images``. What each model
accepts (sizes, ``n``, qualities, prompt limits, references, mask) is the catalog's
(``catalog.yaml``, section ``openai``); its ``*`` entry serves any other model of an
OpenAI-compatible upstream, passing what the caller set for the upstream to judge. This adapter
keeps only the translation:

- a size the model cannot make is snapped to the nearest it can (``sizes``), or scaled into its
  free-size bounds (``size_bounds``: gpt-image-2); a model with neither receives ``size`` and
  ``aspect_ratio`` as given;
- public quality words are sent as the model's own (``wire.quality_map``: ``hd`` → ``high``);
- we ask for ``b64_json`` where the model takes ``response_format`` (``wire.response_format``:
  DALL·E), so no upstream URL ever needs a second download; the caller's ``response_format`` is
  honoured by the gateway, whatever the upstream returned;
- a generation with reference images goes to ``/images/edits`` (where GPT image models take
  them; the generations endpoint has no field for them), as multipart with repeated ``image[]``
  parts (``wire.image_field``: dall-e-2 takes one ``image``);
- a caller who streams, on a model that takes ``partial_images`` (its catalog ``params``), makes
  the upstream stream too (``stream: true``): each partial image is handed on as it arrives
  (``Call.on_partial``), the completed events are the result. A failure once a partial image has
  been passed on is not retried on another channel (the caller has seen this one's work).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field

from imagegate.core.errors import ContentRefused, InvalidRequest, UpstreamBadResponse, UpstreamError
from imagegate.core.geometry import format_size, nearest_size, parse_ratio, parse_size
from imagegate.core.job import Call, ImageJob, OutputImage, Partial, ProviderResult, Usage
from imagegate.core.spec import ModelSpec
from imagegate.providers.base import Adapter, Reply, upstream_errors
from imagegate.wire.openai_images import (
    ErrorBody,
    ImagesRequest,
    ImagesResponse,
    ImageStreamEvent,
    decoded_images,
    images_of,
    sse_events,
)

_RATIO_AREA = 1024 * 1024
"""An aspect ratio alone, on a model with free sizes, is drawn at about the standard sizes' area."""
_TRANSLATED = frozenset({"size", "aspect_ratio", "quality", "partial_images"})
"""Public parameters this adapter translates; the model's other ``params`` are sent as given."""
# Safety refusals: ``moderation_blocked`` (GPT image models) and ``content_policy_violation``
# (DALL·E), both answered as 400 (observed in issue logs; see providers.md §1).
_REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation"})


class OpenAIWire(BaseModel):
    """A catalog entry's ``wire:`` for the ``openai`` protocol."""

    model_config = ConfigDict(extra="forbid")

    response_format: bool = False
    """The model takes ``response_format`` (DALL·E, most compatible upstreams): ``b64_json`` is
    asked for. GPT image models refuse the field (they always answer base64)."""
    auto_size: bool = False
    """``size: auto`` is passed on (GPT image models); otherwise ``auto`` sends no size."""
    quality_map: dict[str, str] = Field(default_factory=dict)
    """Public quality words sent as the model's own (``hd: high``); others are sent as given."""
    image_field: Literal["image[]", "image"] = "image[]"
    """The multipart name of an edit's images (dall-e-2 takes one ``image``)."""
    png_edits: bool = False
    """An edit's image must be a PNG (dall-e-2)."""


class OpenAIAdapter(Adapter):
    provider = "openai"
    key_env = "OPENAI_API_KEY"
    default_base_url = "https://api.openai.com/v1"
    Wire = OpenAIWire

    def error_for(self, reply: Reply) -> UpstreamError:
        if reply.status == 400:
            try:
                err = ErrorBody.model_validate_json(reply.body).error
            except ValueError:
                err = None
            if err is not None and err.code in _REFUSAL_CODES:
                return ContentRefused(f"The upstream's safety system refused the request: {err.message}",
                                      reason="SAFETY")
        return super().error_for(reply)

    def check(self, job: ImageJob, spec: ModelSpec) -> None:
        # Prompt length, sizes, qualities, references and the mask: the catalog's, checked by the router.
        png_only = self.wire(spec).png_edits and job.action == "edit"
        if png_only and job.images and job.images[0].mime not in (None, "image/png"):
            raise InvalidRequest(f"{job.model} edits take one square PNG image.", param="image")

    @staticmethod
    def _size(job: ImageJob, spec: ModelSpec, wire: OpenAIWire) -> str | None:
        if spec.sizes is None and spec.size_bounds is None:
            return job.size  # the upstream judges
        if job.aspect_ratio:
            ratio = parse_ratio(job.aspect_ratio)
            if spec.sizes:
                return format_size(nearest_size(int(1024 * ratio), 1024, spec.sizes))
            assert spec.size_bounds is not None
            return format_size(spec.size_bounds.for_ratio(ratio, area=_RATIO_AREA))
        parsed = parse_size(job.size)
        if parsed is None:
            return "auto" if wire.auto_size and job.size else None
        if spec.sizes:
            return format_size(nearest_size(*parsed, spec.sizes))
        assert spec.size_bounds is not None
        return format_size(spec.size_bounds.fit(*parsed))

    @staticmethod
    def _edits(call: Call) -> bool:
        """Whether the call goes to ``/images/edits``: edits, and generations with reference
        images (GPT image models take references there; the generations endpoint has no field
        for them)."""
        return call.job.action == "edit" or bool(call.images)

    def build_request(self, call: Call) -> ImagesRequest:
        job, spec = call.job, call.spec
        wire: OpenAIWire = self.wire(spec)
        passed = spec.params - _TRANSLATED
        if spec.sizes is None and spec.size_bounds is None:
            passed |= spec.params & {"aspect_ratio"}  # a free-size upstream judges the ratio itself
        # The spec takes ``moderation`` on generations only and ``input_fidelity`` on edits only.
        passed -= {"moderation" if self._edits(call) else "input_fidelity"}
        fields: dict[str, Any] = {}
        for name in passed:
            value = getattr(job, name, None)
            if value is None:
                value = job.extra.get(name)
            if value is not None:
                fields[name] = value
        quality = wire.quality_map.get(job.quality, job.quality) if job.quality and "quality" in spec.params \
            else None
        return ImagesRequest(model=call.upstream_model, prompt=job.prompt, n=call.n,
                             size=self._size(job, spec, wire), quality=quality,
                             response_format="b64_json" if wire.response_format else None, **fields)

    async def submit(self, call: Call) -> ProviderResult:
        headers = {"Authorization": f"Bearer {self.channel.api_key or ''}"}
        fields = self.build_request(call).body()
        if call.on_partial is not None and "partial_images" in call.spec.params:
            return await self._stream(call, fields, headers)
        if self._edits(call):
            form = self._multipart(call, fields, self.wire(call.spec).image_field)
            reply = await self.send("POST", f"{self.base_url}/images/edits", data=form, headers=headers)
        else:
            reply = await self.send("POST", f"{self.base_url}/images/generations", json=fields, headers=headers)
        if call.job.response_format == "url":
            # The image will be stored, so decode now; a caller who asked for base64 gets the
            # upstream's string passed through untouched instead.
            decoded = decoded_images(reply.body)
            if decoded is not None:
                return decoded
        mime = f"image/{call.job.output_format or 'png'}".replace("jpg", "jpeg")
        return images_of(self.parse(ImagesResponse, reply), mime=mime)

    async def _stream(self, call: Call, fields: dict[str, Any], headers: dict[str, str]) -> ProviderResult:
        """The upstream's Server-Sent Events: partial images handed on, completed images kept."""
        assert call.on_partial is not None
        fields = {**fields, "stream": True, "partial_images": call.job.partial_images or 0}
        body: aiohttp.FormData | bytes
        if self._edits(call):
            url, body = f"{self.base_url}/images/edits", self._multipart(call, fields, self.wire(call.spec).image_field)
        else:
            url, body = f"{self.base_url}/images/generations", orjson.dumps(fields)
        images: list[OutputImage] = []
        usage: Usage | None = None
        passed_on = False
        try:
            async for event in self._events(url, body, headers):
                if event.error is not None:
                    if event.error.code in _REFUSAL_CODES:
                        raise ContentRefused(f"The upstream's safety system refused the request: "
                                             f"{event.error.message}", reason="SAFETY")
                    raise UpstreamBadResponse(f"The upstream ({self.provider}) failed while streaming: "
                                              f"{event.error.message}")
                mime = f"image/{event.output_format or call.job.output_format or 'png'}".replace("jpg", "jpeg")
                if event.partial and event.b64_json:
                    wh = parse_size(event.size)
                    call.on_partial(Partial(b64=event.b64_json, mime=mime, width=wh[0] if wh else None,
                                            height=wh[1] if wh else None))
                    passed_on = True
                elif event.completed and (event.b64_json or event.url):
                    images.append(OutputImage(b64=event.b64_json, url=None if event.b64_json else event.url,
                                              mime=mime))
                    if event.usage is not None:
                        usage = event.usage if usage is None else usage + event.usage
        except UpstreamError as exc:
            if passed_on and exc.retryable:
                raise UpstreamBadResponse(f"The upstream's stream broke off: {exc.message}") from exc
            raise
        if not images:
            raise UpstreamBadResponse(f"The upstream ({self.provider}) ended its stream without an image.")
        return ProviderResult(images=images, usage=usage)

    async def _events(self, url: str, body: aiohttp.FormData | bytes,
                      headers: dict[str, str]) -> AsyncIterator[ImageStreamEvent]:
        hdrs = {**headers, "Accept": "text/event-stream"}
        if isinstance(body, bytes):
            hdrs["Content-Type"] = "application/json"
        async with upstream_errors(self.provider), self.http.post(
                url, data=body, headers=hdrs, proxy=self.channel.proxy,
                timeout=aiohttp.ClientTimeout(total=self.channel.timeout)) as resp:
            if resp.status >= 400 or "text/event-stream" not in resp.headers.get("Content-Type", ""):
                reply = Reply(resp.status, await resp.read(), resp.headers.get("Content-Type", ""))
                if reply.status >= 400:
                    raise self.error_for(reply)
                # A compatible upstream that ignored ``stream``: its ordinary answer.
                for datum in self.parse(ImagesResponse, reply).data:
                    yield ImageStreamEvent(type="image_generation.completed", b64_json=datum.b64_json,
                                           url=datum.url, output_format=None)
                return
            buffer = bytearray()
            async for chunk in resp.content.iter_any():
                buffer += chunk.replace(b"\r", b"")
                for data in sse_events(buffer):
                    if data.strip() == b"[DONE]":
                        return
                    try:
                        yield ImageStreamEvent.model_validate_json(data)
                    except ValueError as exc:
                        raise UpstreamBadResponse(f"The upstream ({self.provider}) streamed an event imagegate "
                                                  "cannot read.") from exc

    @staticmethod
    def _multipart(call: Call, fields: dict[str, Any], image_field: str) -> aiohttp.FormData:
        form = aiohttp.FormData()
        # The official SDK sends several images as repeated ``image[]`` parts.
        for i, img in enumerate(call.images):
            ext = img.mime.split("/")[-1]
            form.add_field(image_field, img.data, filename=f"image{i}.{ext}", content_type=img.mime)
        if call.mask is not None:
            form.add_field("mask", call.mask.data, filename="mask.png", content_type="image/png")
        for key, value in fields.items():
            form.add_field(key, str(value).lower() if isinstance(value, bool) else str(value))
        return form
