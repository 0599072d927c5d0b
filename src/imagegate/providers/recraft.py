"""Recraft API: synchronous, OpenAI-shaped image generation.

Wire contract: Recraft's API reference (recraft.ai/docs, its generated TypeScript client
``recraft-ai/mcp-recraft-server``); the OpenAI-shaped parts are ``imagegate.wire.openai_images``.
What each model accepts (sizes, ``n``, prompt length, styles, formats) is the catalog's
(``catalog.yaml``, section ``recraft``). Choices:

- We ask for ``response_format: b64_json``: the images come back inside the one answer, so no
  second request to Recraft's image host is needed (its URLs also expire after ~24 h); the
  caller's ``response_format`` is honoured by the gateway whatever the upstream returned.
- A model with fixed sizes (V2, V3) gets ``size``/``aspect_ratio`` snapped to the nearest one.
- The vector styles (``wire.svg_styles``: ``vector_illustration``, ``icon``) return SVG, which the
  gateway does not serve as an image: they are refused with a 400 naming ``style``.
- A catalog entry may carry a preset (``wire.preset``): a default style, words appended to the
  prompt (counted in its limit) and a palette in ``controls.colors``; whatever the caller sets
  explicitly (style, style_id, colors) wins. ``recraftv3-halloween`` is such an entry, not a
  Recraft model: ``recraftv3`` with this project's Halloween preset.
- Errors are plain text (``401 request unauthorized``) or JSON depending on the path
  [RC-DOC error-handling]: ``Content-Type`` decides how the body is read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import format_size, nearest_size, parse_ratio, parse_size
from imagegate.core.job import Call, ImageJob, ProviderResult
from imagegate.core.spec import ModelSpec
from imagegate.providers.base import Adapter, Reply
from imagegate.wire.openai_images import ErrorDetail, ImagesRequest, ImagesResponse, decoded_images, images_of


class RecraftPreset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_suffix: str = ""
    """Appended to the caller's prompt."""
    style: str | None = None
    """The style when the caller sets neither ``style`` nor ``style_id``."""
    colors: tuple[tuple[int, int, int], ...] = ()
    """``controls.colors`` (RGB) when the caller sends none."""


class RecraftWire(BaseModel):
    """A catalog entry's ``wire:`` for the ``recraft`` protocol."""

    model_config = ConfigDict(extra="forbid")

    styles: tuple[str, ...] | None = None
    """The raster style families the model draws; None: any (the upstream judges)."""
    svg_styles: tuple[str, ...] = ()
    """Styles that make SVG: refused (the gateway serves raster images only)."""
    formats: tuple[str, ...] = ("png", "webp")
    """``output_format`` values (sent as ``image_format``)."""
    preset: RecraftPreset | None = None


class RecraftRequest(ImagesRequest):
    """Recraft's ``GenerateImageRequest``: OpenAI's fields plus its own."""

    model_config = ConfigDict(extra="forbid")

    substyle: str | None = None
    style_id: str | None = None
    negative_prompt: str | None = None
    random_seed: int | None = None
    image_format: str | None = None
    controls: dict[str, Any] | None = None
    text_layout: list[Any] | None = None


class _JsonError(BaseModel):
    """Recraft's JSON error shape is not documented; clients in the wild read ``message``,
    ``error.message`` or ``error``."""

    code: str | None = None
    message: str | None = None
    error: str | ErrorDetail | None = None


_EXTRA_TYPES: tuple[tuple[str, type], ...] = (("substyle", str), ("style_id", str), ("controls", dict),
                                              ("text_layout", list))


class RecraftAdapter(Adapter):
    """Recraft models (and any Recraft model id a channel maps) via ``/images/generations``."""

    provider = "recraft"
    key_env = "RECRAFT_API_KEY"
    default_base_url = "https://external.api.recraft.ai/v1"
    Wire = RecraftWire

    def check(self, job: ImageJob, spec: ModelSpec) -> None:
        wire: RecraftWire = self.wire(spec)
        if wire.preset is not None and spec.max_prompt is not None:
            prompt = self._prompt(job.prompt, wire)
            if len(prompt) > spec.max_prompt:
                raise InvalidRequest(
                    f"prompt is too long for {job.model}: it takes at most {spec.max_prompt} characters, and its "
                    f"preset adds {len(wire.preset.prompt_suffix)} of its own.", param="prompt")
        if job.style in wire.svg_styles:
            raise InvalidRequest(f"style {job.style!r} makes SVG images, which this gateway does not serve.",
                                 param="style")
        if job.style is not None and wire.styles is not None and job.style not in wire.styles:
            raise InvalidRequest(f"style must be one of {sorted(wire.styles)} for {job.model}.", param="style")
        if job.output_format is not None and job.output_format not in wire.formats:
            raise InvalidRequest(f"{job.model} makes {' or '.join(wire.formats)} images, not {job.output_format}.",
                                 param="output_format")
        if "substyle" in job.extra and not job.style and not (wire.preset and wire.preset.style):
            raise InvalidRequest("substyle refines a style: set style too.", param="substyle")
        for name, kind in _EXTRA_TYPES:
            if name in job.extra and not isinstance(job.extra[name], kind):
                raise InvalidRequest(f"{name} must be a {kind.__name__} for {job.model}.", param=name)

    @staticmethod
    def _prompt(prompt: str, wire: RecraftWire) -> str:
        return prompt + wire.preset.prompt_suffix if wire.preset else prompt

    @staticmethod
    def _size(job: ImageJob, spec: ModelSpec) -> str | None:
        if "size" not in spec.params:
            return None
        if not spec.sizes:
            return job.size  # the upstream judges
        if job.aspect_ratio:
            return format_size(nearest_size(int(1024 * parse_ratio(job.aspect_ratio)), 1024, spec.sizes))
        wh = parse_size(job.size)
        return format_size(nearest_size(*wh, spec.sizes)) if wh else None

    def build_request(self, call: Call) -> RecraftRequest:
        job, spec = call.job, call.spec
        wire: RecraftWire = self.wire(spec)
        preset = wire.preset

        def given(name: str) -> Any:  # what the caller set, if the model honours it (else reported dropped)
            return None if name not in spec.params else job.extra.get(name, getattr(job, name, None))

        style_id = given("style_id")
        # A custom style replaces style/substyle upstream.
        style = None if style_id is not None else given("style") or (preset.style if preset else None)
        controls = dict(given("controls") or {})
        if preset and preset.colors and "colors" not in controls:
            controls["colors"] = [{"rgb": list(rgb)} for rgb in preset.colors]
        return RecraftRequest(
            prompt=self._prompt(job.prompt, wire), model=call.upstream_model, n=call.n,
            response_format="b64_json", size=self._size(job, spec), style_id=style_id, style=style,
            substyle=given("substyle") if style_id is None else None, negative_prompt=given("negative_prompt") or None,
            random_seed=given("seed"), image_format=given("output_format"), controls=controls or None,
            text_layout=given("text_layout"),
        )

    async def submit(self, call: Call) -> ProviderResult:
        reply = await self.send("POST", f"{self.base_url}/images/generations", json=self.build_request(call).body(),
                                headers={"Authorization": f"Bearer {self.channel.api_key or ''}"})
        if call.job.response_format == "url":
            decoded = decoded_images(reply.body)  # the images will be stored: decode them now
            if decoded is not None:
                return decoded
        mime = "image/webp" if call.job.output_format == "webp" else "image/png"
        return images_of(self.parse(ImagesResponse, reply), mime=mime)

    def error_message(self, reply: Reply) -> str:
        text = reply.body[:300].decode("utf-8", "replace").strip()
        if not reply.content_type.startswith("application/json"):
            return text or f"HTTP {reply.status}"
        try:
            err = _JsonError.model_validate_json(reply.body)
        except ValueError:
            return text
        if isinstance(err.error, ErrorDetail) and err.error.message:
            return err.error.message
        return err.message or (err.error if isinstance(err.error, str) else None) or text
