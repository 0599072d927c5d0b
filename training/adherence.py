"""Rule-based prompt-adherence checker for the shapes model (numpy only; evaluation code, not
part of the served package).

Used by the tests (``tests/localmodel``) and the model card evaluation (``evaluate.py``) to measure
whether a generated image shows what its caption asked for. It reads:
background colour (majority of the border ring), object pixels (far from the
background colour), each object's colour (majority palette label), centre
(centroid -> nearest anchor), size (bounding-box radius -> nearest size) and a
coarse shape class (fill ratio of the bounding box, hole in the middle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imagegate.localmodel.vocab import COLORS, POSITIONS, SHAPES, SIZES, Caption, ObjectSpec

_NAMES = list(COLORS)
_PALETTE = np.asarray([COLORS[n] for n in _NAMES], np.float32)
# Bounding-box half extent / radius for each shape (see training/dataset.py).
_EXTENT = {"circle": 1.0, "square": 0.82, "triangle": 1.0, "star": 1.05, "ring": 1.0}


def palette_labels(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
    """Index of the nearest palette colour for every pixel (H x W)."""
    d = ((img.astype(np.float32)[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)
    labels: npt.NDArray[np.intp] = np.argmin(d, axis=-1)
    return labels


@dataclass(frozen=True)
class Found:
    """One object found in an image."""

    color: str
    position: str
    size: str
    shape: str
    pixels: int


@dataclass(frozen=True)
class Reading:
    background: str
    objects: tuple[Found, ...]


def _shape_class(m: npt.NDArray[np.bool_]) -> str:
    # Features calibrated on training renders: bounding-box fill ratio, a hole at
    # the centroid (ring), and how bottom-heavy the mass is (triangle points up).
    ys, xs = np.nonzero(m)
    y0, y1 = ys.min(), ys.max()
    h = y1 - y0 + 1
    w = xs.max() - xs.min() + 1
    fill = m.sum() / float(h * w)
    cy, cx = int(ys.mean()), int(xs.mean())
    if not m[cy, cx]:
        return "ring"
    bottom = float((ys > (y0 + y1) / 2).mean())
    if fill > 0.9:
        return "square"
    if bottom > 0.56:
        return "triangle"
    if fill > 0.7:
        return "circle"
    if fill > 0.56:
        return "ring"
    return "star"


def _describe(m: npt.NDArray[np.bool_], color: str, size: int) -> Found:
    ys, xs = np.nonzero(m)
    cx, cy = (xs.mean() + 0.5) / size, (ys.mean() + 0.5) / size
    pos = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    shape = _shape_class(m)
    half = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) / 2 / size / _EXTENT[shape]
    sz = min(SIZES, key=lambda s: abs(SIZES[s] - half))
    return Found(color, pos, sz, shape, int(m.sum()))


def read(img: npt.NDArray[np.uint8], max_objects: int = 2, min_pixels: int = 4) -> Reading:
    """Describe an H x W x 3 uint8 image as background + up to ``max_objects`` objects."""
    size = img.shape[0]
    labels = palette_labels(img)
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    bg = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    bg_rgb = img[np.zeros_like(labels, bool) | (labels == bg)].astype(np.float32).mean(0)
    fg = np.sqrt(((img.astype(np.float32) - bg_rgb) ** 2).sum(-1)) > 60
    fg &= labels != bg
    counts = np.bincount(labels[fg], minlength=len(_NAMES))
    found = []
    for idx in np.argsort(-counts)[:max_objects]:
        if counts[idx] < min_pixels:
            break
        found.append(_describe(fg & (labels == idx), _NAMES[idx], size))
    return Reading(_NAMES[bg], tuple(found))


def check(img: npt.NDArray[np.uint8], cap: Caption) -> dict[str, bool]:
    """Per-attribute pass/fail for the attributes ``cap`` specifies.

    Keys: ``background``, ``color``, ``position``, ``size``, ``shape`` (single-object
    captions), and for two objects ``color`` / ``position`` require both to match.
    Objects are matched by colour, so every object needs a colour in ``cap``.
    """
    r = read(img, max_objects=max(1, len(cap.objects)))
    out: dict[str, bool] = {}
    if cap.background:
        out["background"] = r.background == cap.background
    by_color = {f.color: f for f in r.objects}
    specs = [o for o in cap.objects if o.color]
    if specs:
        out["color"] = all(o.color in by_color for o in specs)
    for attr in ("position", "size", "shape"):
        wanted = [o for o in specs if getattr(o, attr)]
        if wanted:
            out[attr] = all(
                o.color in by_color and getattr(by_color[o.color], attr) == getattr(o, attr) for o in wanted
            )
    return out


# ---- fixed, deterministic evaluation prompt sets (tests and model card) ----

_C = list(COLORS)
_P = list(POSITIONS)


def single_object(n: int, sizes: tuple[str, ...] = ("medium", "large")) -> list[tuple[Caption, int]]:
    """``n`` (caption, seed) pairs cycling colour, background, position, shape and size."""
    out = []
    for i in range(n):
        color = _C[i % len(_C)]
        bg = _C[(i * 5 + 3) % len(_C)]
        if bg == color:
            bg = _C[(i * 5 + 4) % len(_C)]
        obj = ObjectSpec(SHAPES[(i // 3) % len(SHAPES)], color, sizes[i % len(sizes)], _P[(i * 7) % len(_P)])
        out.append((Caption((obj,), bg), 1000 + i))
    return out


def two_objects(n: int) -> list[tuple[Caption, int]]:
    """Two coloured objects on distinct, well-separated anchors."""
    pairs = [("left", "right"), ("top", "bottom"), ("top-left", "bottom-right"), ("top-right", "bottom-left")]
    out = []
    for i in range(n):
        c1, c2 = _C[i % len(_C)], _C[(i + 4) % len(_C)]
        bg = next(c for c in _C[(i * 5 + 1) % len(_C) :] + _C if c not in (c1, c2))
        p1, p2 = pairs[i % len(pairs)]
        o1 = ObjectSpec(SHAPES[i % 5], c1, "medium", p1)
        o2 = ObjectSpec(SHAPES[(i + 2) % 5], c2, "medium", p2)
        out.append((Caption((o1, o2), bg), 2000 + i))
    return out
