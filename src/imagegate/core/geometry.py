"""Sizes and aspect ratios: ``WxH`` ↔ ``W:H`` ↔ what a model can actually produce.

Pure functions; each adapter declares its supported sizes or ratios and calls these to snap a
request to the nearest one. "Nearest" compares aspect ratios on a log scale (so 2:1 and 1:2 are
equally far from 1:1), then area.

What a caller may ask for at all is checked here too: a size is ``WxH`` with each side within
``MIN_SIDE``..``MAX_SIDE`` (what no model can draw is refused, not snapped), and an aspect ratio is
one of ``PUBLIC_RATIOS`` (or one a model declares besides them) — an enumeration, not a number to
approximate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from imagegate.core.errors import InvalidRequest

PUBLIC_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "9:21", "21:9", "1:4", "4:1",
                 "1:8", "8:1")
"""The aspect ratios every model takes: one it does not draw is snapped to its nearest (and the
answer says so in ``x-imagegate-adjusted-params``)."""
MIN_SIDE = 64
"""Smallest side a caller may ask for (models with free sizes would draw a 1x1 picture)."""
MAX_SIDE = 16384
"""Largest side any model draws (Seedream 4.0 at 16:1)."""

_SIZE = re.compile(r"^\s*(\d+)\s*[xX*×]\s*(\d+)\s*$")
_RATIO = re.compile(r"^\s*(\d{1,3}(?:\.\d+)?)\s*:\s*(\d{1,3}(?:\.\d+)?)\s*$")


def parse_size(size: str | None, *, param: str = "size") -> tuple[int, int] | None:
    """``"1024x768"`` → ``(1024, 768)``; ``None``/``"auto"`` → ``None``. Sides outside
    ``MIN_SIDE``..``MAX_SIDE`` are refused."""
    if size is None or size.strip().lower() == "auto":
        return None
    m = _SIZE.match(size)
    if not m:
        raise InvalidRequest(f"size must be WIDTHxHEIGHT in pixels (e.g. 1024x1024) or 'auto', not {size!r}.",
                             param=param)
    w, h = (int(side) if len(side) <= 9 else MAX_SIDE + 1 for side in (m[1], m[2]))
    if max(w, h) > MAX_SIDE:
        raise InvalidRequest(f"size {size!r} is too large: no side may exceed {MAX_SIDE} px.", param=param)
    if min(w, h) < MIN_SIDE:
        raise InvalidRequest(f"size {size!r} is too small: each side must be at least {MIN_SIDE} px.", param=param)
    return w, h


def parse_ratio(ratio: str, *, param: str = "aspect_ratio") -> float:
    m = _RATIO.match(ratio)
    if not m or float(m[1]) == 0 or float(m[2]) == 0:
        raise InvalidRequest(f"aspect_ratio must be W:H, one of {', '.join(PUBLIC_RATIOS)}; not {ratio!r}.",
                             param=param)
    return float(m[1]) / float(m[2])


def known_ratio(ratio: str, choices: Iterable[str]) -> str | None:
    """The one of ``choices`` that ``ratio`` names (``"16:9"``, ``" 16 : 9 "`` and ``"32:18"`` all
    name ``"16:9"``), or None."""
    value = parse_ratio(ratio)
    return next((c for c in choices if math.isclose(parse_ratio(c), value, rel_tol=1e-9)), None)


def ratio_of(wh: tuple[int, int]) -> str:
    """``(1536, 1024)`` → ``"3:2"``."""
    g = math.gcd(*wh)
    return f"{wh[0] // g}:{wh[1] // g}"


def same_shape(a: float, b: float, tolerance: float = 0.01) -> bool:
    """Whether two aspect ratios are the same shape to within ``tolerance`` (1 %: 1820x1024 is 16:9)."""
    return _distance(a, b) < tolerance


def requested_ratio(size: str | None, aspect_ratio: str | None) -> float | None:
    """The aspect ratio a request asks for: ``aspect_ratio`` wins over ``size``."""
    if aspect_ratio:
        return parse_ratio(aspect_ratio)
    wh = parse_size(size)
    return wh[0] / wh[1] if wh else None


def _distance(a: float, b: float) -> float:
    return abs(math.log(a) - math.log(b))


def nearest_ratio(target: float, choices: Sequence[str]) -> str:
    return min(choices, key=lambda c: _distance(parse_ratio(c), target))


def nearest_size(w: int, h: int, choices: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The supported size closest in shape, then in area, to ``w``×``h``."""
    return min(choices, key=lambda c: (round(_distance(c[0] / c[1], w / h), 3), abs(c[0] * c[1] - w * h)))


def dims_for_ratio(ratio: float, *, area: int, multiple: int, lo: int, hi: int) -> tuple[int, int]:
    """Width and height of about ``area`` pixels in shape ``ratio``, each a multiple of
    ``multiple`` within ``[lo, hi]`` (e.g. FLUX: multiples of 32 in 256..1440)."""
    w = math.sqrt(area * ratio)
    h = w / ratio
    scale = min(1.0, hi / max(w, h))
    w, h = w * scale, h * scale

    def snap(x: float) -> int:
        return max(lo, min(hi, round(x / multiple) * multiple))

    return snap(w), snap(h)


def fit_within(w: int, h: int, *, multiple: int, lo: int, hi: int,
               max_pixels: int | None = None) -> tuple[int, int]:
    """Keep the requested shape and, as far as limits allow, the requested size (at most
    ``max_pixels`` in all, when the model caps the area: FLUX.2's 4 MP)."""
    area = w * h if max_pixels is None else min(w * h, max_pixels)
    fw, fh = dims_for_ratio(w / h, area=area, multiple=multiple, lo=lo, hi=hi)
    while max_pixels is not None and fw * fh > max_pixels and max(fw, fh) - multiple >= lo:
        # rounding to the multiple went over the cap: take one step off the longer side
        fw, fh = (fw - multiple, fh) if fw >= fh else (fw, fh - multiple)
    return fw, fh


def format_size(wh: tuple[int, int], sep: str = "x") -> str:
    return f"{wh[0]}{sep}{wh[1]}"
