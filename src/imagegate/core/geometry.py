"""Sizes and aspect ratios: ``WxH`` ↔ ``W:H`` ↔ what a model can actually produce.

Pure functions; each adapter declares its supported sizes or ratios and calls these to snap a
request to the nearest one. "Nearest" compares aspect ratios on a log scale (so 2:1 and 1:2 are
equally far from 1:1), then area.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from imagegate.core.errors import InvalidRequest

PUBLIC_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21", "4:5", "5:4")

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX*×]\s*(\d{1,5})\s*$")
_RATIO = re.compile(r"^\s*(\d{1,3}(?:\.\d+)?)\s*:\s*(\d{1,3}(?:\.\d+)?)\s*$")


def parse_size(size: str | None, *, param: str = "size") -> tuple[int, int] | None:
    """``"1024x768"`` → ``(1024, 768)``; ``None``/``"auto"`` → ``None``."""
    if size is None or size.strip().lower() == "auto":
        return None
    m = _SIZE.match(size)
    if not m or int(m[1]) == 0 or int(m[2]) == 0:
        raise InvalidRequest(f"size must look like 1024x1024 or be 'auto', not {size!r}.", param=param)
    return int(m[1]), int(m[2])


def parse_ratio(ratio: str, *, param: str = "aspect_ratio") -> float:
    m = _RATIO.match(ratio)
    if not m or float(m[1]) == 0 or float(m[2]) == 0:
        raise InvalidRequest(f"aspect_ratio must look like 16:9, not {ratio!r}.", param=param)
    return float(m[1]) / float(m[2])


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


def fit_within(w: int, h: int, *, multiple: int, lo: int, hi: int) -> tuple[int, int]:
    """Keep the requested shape and, as far as limits allow, the requested size."""
    return dims_for_ratio(w / h, area=w * h, multiple=multiple, lo=lo, hi=hi)


def format_size(wh: tuple[int, int], sep: str = "x") -> str:
    return f"{wh[0]}{sep}{wh[1]}"
