"""``ModelSpec``: what one upstream model accepts, as the catalog (``catalog.yaml``) says.

Plain data shared by the gateway (which enforces the generic part: actions, reference images,
masks, sizes, ratios, prompt length) and the adapters (which read ``wire`` for the facts of their
own protocol). Built by ``imagegate.catalog``; nothing here knows a vendor.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imagegate.core.errors import InvalidRequest
from imagegate.core.geometry import dims_for_ratio, parse_size

Action = Literal["generate", "edit"]
Size = tuple[int, int]


class SizeBounds(BaseModel):
    """Free sizes within bounds (gpt-image-2, Seedream): the model draws any ``WxH`` whose sides
    are multiples of ``multiple_of``, whose shape is within ``max_ratio`` and whose pixels and sides
    are within the limits. A requested size keeps its shape and is scaled into the limits (like a
    fixed-size model's nearest size); a ``size`` whose shape is beyond ``max_ratio`` is a 400, an
    ``aspect_ratio`` beyond it is drawn at ``max_ratio`` (reported as adjusted)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    multiple_of: int = Field(default=1, ge=1)
    max_ratio: float | None = Field(default=None, ge=1)
    """Longest side over shortest side, at most."""
    min_pixels: int | None = Field(default=None, ge=1)
    max_pixels: int | None = Field(default=None, ge=1)
    min_side: int | None = Field(default=None, ge=1)
    max_side: int | None = Field(default=None, ge=1)

    def shape_ok(self, w: float, h: float) -> bool:
        return self.max_ratio is None or max(w / h, h / w) <= self.max_ratio * (1 + 1e-9)

    def clamp_ratio(self, ratio: float) -> float:
        """``ratio`` (W/H), or the nearest shape within ``max_ratio``."""
        if self.max_ratio is None:
            return ratio
        return min(max(ratio, 1 / self.max_ratio), self.max_ratio)

    def for_ratio(self, ratio: float, *, area: int) -> tuple[int, int]:
        """The size drawn for an aspect ratio: about ``area`` pixels in that shape (or the nearest
        shape within ``max_ratio``), within the limits."""
        w, h = dims_for_ratio(self.clamp_ratio(ratio), area=area, multiple=self.multiple_of, lo=1, hi=1 << 20)
        return self.fit(w, h)

    def fit(self, w: int, h: int, *, param: str = "size") -> tuple[int, int]:
        """``w``×``h`` with its shape kept, scaled into the pixel range and the side limits, each side
        a multiple of ``multiple_of``. A shape beyond ``max_ratio`` is an ``InvalidRequest``."""
        if not self.shape_ok(w, h):
            raise InvalidRequest(f"{param} {w}x{h} is a shape this model does not draw: at most "
                                 f"{self.max_ratio:g}:1 or 1:{self.max_ratio:g}.", param=param)
        area = w * h
        lo, hi = self.min_pixels or 1, self.max_pixels or area
        scale = math.sqrt(min(max(area, lo), max(hi, lo)) / area)
        if self.max_side is not None:
            scale = min(scale, self.max_side / max(w, h))
        if self.min_side is not None:
            scale = max(scale, self.min_side / min(w, h))
        m = self.multiple_of
        first: tuple[int, int] | None = None
        for rw, rh in ((round, round), (math.ceil, math.ceil), (math.floor, math.floor),
                       (math.floor, math.ceil), (math.ceil, math.floor)):
            out = self._sides(int(rw(w * scale / m)) * m, int(rh(h * scale / m)) * m)
            first = first or out
            if self._within(*out):
                return out
        assert first is not None
        return first

    def _sides(self, w: int, h: int) -> tuple[int, int]:
        m = self.multiple_of
        lo = -(-(self.min_side or m) // m) * m  # the smallest multiple at or above min_side
        hi = (self.max_side // m) * m if self.max_side else None
        return tuple(max(lo, min(hi, s) if hi else s) for s in (w, h))  # type: ignore[return-value]

    def _within(self, w: int, h: int) -> bool:
        return (self.shape_ok(w, h) and (self.min_pixels is None or w * h >= self.min_pixels)
                and (self.max_pixels is None or w * h <= self.max_pixels))

    def describe(self) -> str:
        """The bounds in words, for error messages."""
        parts = [f"sides multiples of {self.multiple_of}"] if self.multiple_of > 1 else []
        if self.max_ratio is not None:
            parts.append(f"shapes up to {self.max_ratio:g}:1 or 1:{self.max_ratio:g}")
        if self.min_pixels is not None or self.max_pixels is not None:
            parts.append(f"{self.min_pixels or 1}..{self.max_pixels or 'any'} pixels")
        if self.min_side is not None or self.max_side is not None:
            parts.append(f"{self.min_side or 1}..{self.max_side or 'any'} px a side")
        return ", ".join(parts)


class ModelSpec(BaseModel):
    """What one upstream model accepts; the gateway enforces the generic part of it, the
    adapter the wire part (``wire``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upstream: str | None = None
    """The model name sent upstream; default: the catalog name (``gemini-3-pro-image-preview@4K``
    is a catalog name whose upstream is ``gemini-3-pro-image-preview``)."""
    sources: tuple[str, ...] = ()
    """Where each fact comes from: the vendor's documentation or SDK."""
    actions: frozenset[Action] = frozenset({"generate"})
    max_n: int = Field(default=1, ge=1)
    """Images one upstream call can return; the gateway fans out in parallel beyond that."""
    max_images: int = Field(default=0, ge=0)
    """Reference images accepted (0: text to image only)."""
    requires_image: bool = False
    images_on_generate: bool = True
    """Reference images are taken on generations too (image to image); False: only on edits
    (dall-e-2, whose edits are inpainting). Either way, never dropped silently: a 400."""
    edit_without_image: bool = False
    """An edit may come with no image at all (the model then draws from the prompt: Gemini);
    otherwise an edit without an image is a 400."""
    mask: bool = False
    prompt_urls: bool = False
    """Reference images may be written into the prompt as URLs separated by spaces (FLUX
    Kontext on the platform): the gateway takes them out of the text and adds them as images."""
    params: frozenset[str] = Field(default_factory=frozenset)
    """Public parameters honoured besides model, prompt, n, response_format, image and mask;
    others are dropped and reported in the ``x-imagegate-dropped-params`` header."""
    native_protocol: Literal["gemini", "chat"] | None = None
    """The surface whose original body (``job.native``) this model's adapter sends on with every
    setting in it; settings of that body no job field carries are reported as dropped on any
    other model."""
    max_prompt: int | None = Field(default=None, ge=1)
    """Characters of prompt the vendor documents (None: only ``limits.max_prompt_chars``)."""
    aspect_ratios: tuple[str, ...] | None = None
    """Aspect ratios the model draws, as the adapter sends them; another ratio of the public set
    is snapped to the nearest of these and reported in ``x-imagegate-adjusted-params``. None: the
    shape is free (or the sizes below say it)."""
    sizes: tuple[Size, ...] | None = None
    """The only sizes the model makes (a request is snapped to the nearest); None: free sizes."""
    max_side: int | None = Field(default=None, ge=1)
    """Largest side a model with free sizes draws, when a larger request is refused rather than
    scaled down."""
    size_bounds: SizeBounds | None = None
    """Free sizes within bounds (``SizeBounds``): a requested size is scaled into them."""
    image_sizes: tuple[str, ...] | None = None
    """Resolution tiers (``image_size``: 1K, 2K, 4K) the model draws; None: it takes none."""
    qualities: tuple[str, ...] | None = None
    """``quality`` values the upstream takes; None: any (the upstream judges)."""
    defaults: dict[str, Any] = Field(default_factory=dict)
    """Public parameters set for the caller who did not set them (``image_size: 4K``)."""
    wire: dict[str, Any] = Field(default_factory=dict)
    """Protocol-specific facts for the adapter, validated by its ``Wire`` model at start-up."""

    @field_validator("sizes", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> Any:
        # ``[1024x1024, 1536x1024]`` in the data file.
        if isinstance(v, list | tuple):
            try:
                return tuple(parse_size(s) if isinstance(s, str) else s for s in v)
            except InvalidRequest as exc:
                raise ValueError(exc.message) from None
        return v

    def upstream_name(self, catalog_name: str) -> str:
        return self.upstream or catalog_name
