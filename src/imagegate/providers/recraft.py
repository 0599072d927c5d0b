"""Recraft API: synchronous, OpenAI-shaped image generation.

Wire contract: Recraft's API reference (its generated TypeScript client
``recraft-ai/mcp-recraft-server`` and recraft.ai/docs). Choices:

- We ask for ``response_format: b64_json``: the images come back inside the one answer, so no
  second request to Recraft's image host is needed (its URLs also expire after ~24 h); the
  caller's ``response_format`` is honoured by the gateway whatever the upstream returned.
- V3 produces a fixed list of sizes; ``size``/``aspect_ratio`` snap to the nearest one.
- The vector styles (``vector_illustration``, ``icon``) return SVG, which the gateway does not
  serve as an image: they are refused with a 400 naming ``style``.
- ``recraftv3-halloween`` is not a Recraft model. It is an upstream id this adapter understands:
  ``recraftv3`` with a fixed Halloween preset (default style ``digital_illustration``, a
  Halloween theme appended to the prompt, an orange/purple/black palette in ``controls.colors``);
  whatever the caller sets explicitly (style, style_id, colors) wins.
- Errors are plain text (``401 request unauthorized``) or JSON depending on the path
  [RC-DOC error-handling]: ``Content-Type`` decides how the body is read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import format_size, nearest_size, parse_ratio, parse_size
from imagegate.core.job import Call, ImageJob, OutputImage, ProviderResult
from imagegate.providers.base import Adapter, ModelSpec, Reply

# [RC-SDK ImageSize.ts] and recraft.ai/docs appendix (V3 sizes).
V3_SIZES = (
    (1024, 1024), (1365, 1024), (1024, 1365), (1536, 1024), (1024, 1536), (1820, 1024),
    (1024, 1820), (1024, 2048), (2048, 1024), (1434, 1024), (1024, 1434), (1024, 1280),
    (1280, 1024), (1024, 1707), (1707, 1024),
)
RASTER_STYLES = frozenset({"any", "realistic_image", "digital_illustration", "logo_raster"})
VECTOR_STYLES = frozenset({"vector_illustration", "icon"})
MAX_PROMPT = 1000  # V2/V3 [RC-DOC appendix]
HALLOWEEN = "recraftv3-halloween"
HALLOWEEN_THEME = (", Halloween theme: jack-o'-lanterns, bats, a full moon, spooky autumn night, "
                   "orange and purple glow")
HALLOWEEN_COLORS = ([255, 117, 24], [106, 13, 173], [20, 20, 20])
_SPEC = ModelSpec(
    max_n=6, sizes=V3_SIZES, max_prompt=MAX_PROMPT,
    params=frozenset({"size", "aspect_ratio", "style", "negative_prompt", "seed", "output_format",
                      "substyle", "style_id", "controls", "text_layout"}),
)


class _Datum(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class _Generated(BaseModel):
    data: list[_Datum]


class _ErrorDetail(BaseModel):
    message: str | None = None


class _JsonError(BaseModel):
    """Recraft's JSON error shape is not documented; clients in the wild read ``message``,
    ``error.message`` or ``error``."""

    code: str | None = None
    message: str | None = None
    error: str | _ErrorDetail | None = None


class RecraftAdapter(Adapter):
    """Recraft V3 (and any Recraft model id a channel maps) via ``/images/generations``."""

    provider = "recraft"
    key_env = "RECRAFT_API_KEY"
    default_base_url = "https://external.api.recraft.ai/v1"
    default_models = {"recraftv3": "recraftv3", HALLOWEEN: HALLOWEEN}

    def spec(self, upstream_model: str) -> ModelSpec:
        return _SPEC

    def check(self, job: ImageJob, upstream_model: str) -> None:
        if len(self._prompt(job, upstream_model)) > MAX_PROMPT:
            raise InvalidRequest(
                f"prompt is too long for {job.model}: Recraft V3 takes at most {MAX_PROMPT} characters"
                + (" (the Halloween theme adds its own words)." if upstream_model == HALLOWEEN else "."),
                param="prompt",
            )
        if job.style in VECTOR_STYLES:
            raise InvalidRequest(f"style {job.style!r} makes SVG images, which this gateway does not serve.",
                                 param="style")
        if job.style is not None and job.style not in RASTER_STYLES:
            raise InvalidRequest(f"style must be one of {sorted(RASTER_STYLES)} for {job.model}.", param="style")
        if job.output_format not in (None, "png", "webp"):
            raise InvalidRequest(f"{job.model} makes png or webp images, not {job.output_format}.",
                                 param="output_format")
        if "substyle" in job.extra and not job.style and upstream_model != HALLOWEEN:
            raise InvalidRequest("substyle refines a style: set style too.", param="substyle")
        for name, kind in (("substyle", str), ("style_id", str), ("controls", dict), ("text_layout", list)):
            if name in job.extra and not isinstance(job.extra[name], kind):
                raise InvalidRequest(f"{name} must be a {kind.__name__} for {job.model}.", param=name)

    @staticmethod
    def _prompt(job: ImageJob, upstream_model: str) -> str:
        return job.prompt + HALLOWEEN_THEME if upstream_model == HALLOWEEN else job.prompt

    def _size(self, job: ImageJob) -> str | None:
        if job.aspect_ratio:
            return format_size(nearest_size(int(1024 * parse_ratio(job.aspect_ratio)), 1024, V3_SIZES))
        wh = parse_size(job.size)
        return format_size(nearest_size(*wh, V3_SIZES)) if wh else None

    def body(self, call: Call) -> dict[str, Any]:
        job, halloween = call.job, call.upstream_model == HALLOWEEN
        body: dict[str, Any] = {
            "prompt": self._prompt(job, call.upstream_model),
            "model": "recraftv3" if halloween else call.upstream_model,
            "n": call.n,
            "response_format": "b64_json",
        }
        if size := self._size(job):
            body["size"] = size
        style_id = job.extra.get("style_id")
        if style_id is not None:
            body["style_id"] = style_id  # a custom style replaces style/substyle upstream
        elif job.style or halloween:
            body["style"] = job.style or "digital_illustration"
        if "substyle" in job.extra and style_id is None:
            body["substyle"] = job.extra["substyle"]
        if job.negative_prompt:
            body["negative_prompt"] = job.negative_prompt
        if job.seed is not None:
            body["random_seed"] = job.seed
        if job.output_format:
            body["image_format"] = job.output_format
        controls = dict(job.extra.get("controls") or {})
        if halloween and "colors" not in controls:
            controls["colors"] = [{"rgb": list(rgb)} for rgb in HALLOWEEN_COLORS]
        if controls:
            body["controls"] = controls
        if "text_layout" in job.extra:
            body["text_layout"] = job.extra["text_layout"]
        return body

    async def submit(self, call: Call) -> ProviderResult:
        reply = await self.send("POST", f"{self.base_url}/images/generations", json=self.body(call),
                                headers={"Authorization": f"Bearer {self.channel.api_key or ''}"})
        answer = self.parse(_Generated, reply)
        mime = "image/webp" if call.job.output_format == "webp" else "image/png"
        return ProviderResult(images=[
            OutputImage(b64=d.b64_json, url=None if d.b64_json else d.url, mime=mime if d.b64_json else None,
                        revised_prompt=d.revised_prompt)
            for d in answer.data if d.b64_json or d.url
        ])

    def error_message(self, reply: Reply) -> str:
        text = reply.body[:300].decode("utf-8", "replace").strip()
        if not reply.content_type.startswith("application/json"):
            return text or f"HTTP {reply.status}"
        try:
            err = _JsonError.model_validate_json(reply.body)
        except ValueError:
            return text
        if isinstance(err.error, _ErrorDetail) and err.error.message:
            return err.error.message
        return err.message or (err.error if isinstance(err.error, str) else None) or text

