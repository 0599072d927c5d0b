"""The embedded ``imagegate-shapes`` model, served in-process (no keys, no network).

The model samples at its native resolution (see ``docs/models/imagegate-shapes.md``) and the
result is upscaled with Lanczos to the requested size (non-square sizes are covered and
centre-cropped, never squashed). Edits: one reference image is image-to-image with ``strength``;
with a mask it is true inpainting — the transparent pixels of the mask are repainted and every
other pixel of the first image is kept bit for bit. Inference runs in the engine's small thread
pool with bounded concurrency, and calls that arrive together are batched into one ONNX run.
A caller who streams with ``partial_images`` is shown the sampler's running estimate of the
images (real intermediate denoising steps, each encoded like the result; the last is the result).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from imagegate.core.errors import UpstreamUnavailable
from imagegate.core.geometry import dims_for_ratio, parse_ratio, parse_size
from imagegate.core.job import Call, InputImage, OutputImage, Partial, ProviderResult
from imagegate.providers.base import Adapter

_MAX_SIDE = 2048  # the catalog's max_side for imagegate-shapes


class LocalOptions(BaseModel):
    """``options:`` of a ``provider: local`` channel."""

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(default=16, ge=1)
    max_concurrency: int = Field(default=1, ge=1)
    batching: bool = True
    default_size: int = Field(default=512, ge=32, le=_MAX_SIDE)


class LocalAdapter(Adapter):
    provider = "local"
    _engines: ClassVar[dict[tuple[int, int, bool], Any]] = {}

    Options = LocalOptions
    options: LocalOptions

    @property
    def engine(self) -> Any:
        """One engine per process and option set, loaded on first use (checksum verified)."""
        from imagegate.localmodel import ShapesEngine, WeightsError

        o = self.options
        key = (o.max_batch, o.max_concurrency, o.batching)
        if key not in self._engines:
            try:
                self._engines[key] = ShapesEngine.load(max_batch=o.max_batch, max_concurrency=o.max_concurrency,
                                                       batching=o.batching)
            except WeightsError as exc:
                raise UpstreamUnavailable(f"The embedded model cannot be loaded: {exc}") from exc
        return self._engines[key]

    def _size(self, call: Call) -> tuple[int, int]:
        job = call.job
        if job.aspect_ratio:
            return dims_for_ratio(parse_ratio(job.aspect_ratio), area=self.options.default_size ** 2,
                                  multiple=8, lo=32, hi=_MAX_SIDE)
        wh = parse_size(job.size)
        if wh is not None:  # within 64.._MAX_SIDE: the router refuses other sizes (ModelSpec.max_side)
            return wh
        if call.images:  # an edit keeps the picture's own size
            return call.images[0].width, call.images[0].height
        return self.options.default_size, self.options.default_size

    async def submit(self, call: Call) -> ProviderResult:
        from imagegate.localmodel import LocalRequest

        width, height = self._size(call)
        init, mask = await asyncio.to_thread(_decode_inputs, call.images[0] if call.images else None,
                                             call.mask, (width, height))
        # Public seeds are int32 (negative ones from Gemini clients): taken as unsigned 32-bit.
        seed = None if call.job.seed is None else call.job.seed & 0xFFFFFFFF
        fmt = call.job.output_format or "png"
        partials, on_partial = 0, None
        if call.on_partial is not None and call.job.partial_images:
            partials, on_partial = call.job.partial_images, _reporter(call, init, mask, (width, height), fmt)
        req = LocalRequest(prompt=call.job.prompt, n=call.n, seed=seed, init_image=init,
                           strength=call.job.strength, mask=mask, partials=partials, on_partial=on_partial)
        generated = await self.engine.generate(req)
        encoded = await asyncio.to_thread(_finish, generated, init, mask, (width, height), fmt)
        revised = self.engine.understood(call.job.prompt)
        return ProviderResult(images=[OutputImage(data=d, mime=f"image/{fmt}", revised_prompt=revised)
                                      for d in encoded])


def _reporter(call: Call, init: np.ndarray | None, mask: np.ndarray | None, size: tuple[int, int],
              fmt: str) -> Callable[[int, list[np.ndarray]], None]:
    """The engine's partial-image callback (a worker thread): encode there, hand over on the loop."""
    assert call.on_partial is not None
    sink, loop = call.on_partial, asyncio.get_running_loop()
    mime = f"image/{fmt}"

    def report(_index: int, images: list[np.ndarray]) -> None:
        for data in _finish(images, init, mask, size, fmt):
            loop.call_soon_threadsafe(sink, Partial(data=data, mime=mime, width=size[0], height=size[1]))

    return report


def _decode_inputs(image: InputImage | None, mask: InputImage | None,
                   size: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The reference image (and mask) as arrays at the output size. Mask: alpha 0 = repaint."""
    if image is None:
        return None, None
    pic = Image.open(io.BytesIO(image.data)).convert("RGB")
    if pic.size != size:
        pic = pic.resize(size, Image.Resampling.LANCZOS)
    init = np.asarray(pic, dtype=np.uint8)
    if mask is None:
        return init, None
    alpha = Image.open(io.BytesIO(mask.data)).convert("RGBA").getchannel("A")
    if alpha.size != size:
        alpha = alpha.resize(size, Image.Resampling.NEAREST)
    return init, np.asarray(alpha) == 0


def _finish(generated: list[np.ndarray], init: np.ndarray | None, mask: np.ndarray | None,
            size: tuple[int, int], fmt: str) -> list[bytes]:
    from imagegate.localmodel import composite, upscale

    out = []
    for img in generated:
        pixels = composite(init, img, mask) if init is not None and mask is not None else upscale(img, *size)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG" if fmt == "jpeg" else fmt.upper())
        out.append(buf.getvalue())
    return out
