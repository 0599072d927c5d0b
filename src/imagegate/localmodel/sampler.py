"""Rectified-flow Euler sampler with classifier-free guidance, img2img and inpainting.

Pure numpy: the denoiser is any callable ``(x, t, tokens) -> v`` over a batch
(the engine passes an onnxruntime session). Every image is a :class:`Row`
carrying its own noise, guidance, start time and optional known region, so rows
from different requests can share one model call per step.

Maths (x_t = (1 - t) x_0 + t n, model predicts v = n - x_0):
* text-to-image integrates dx/dt = v from t=1 (pure noise) to t=0;
* image-to-image starts at t = strength from (1 - t) x_init + t n;
* inpainting additionally re-injects the known region after every step as
  (1 - t) x_init + t n with the *same* noise n (RePaint-style). Using the row's
  own noise keeps the known region on the exact straight path the model
  expects, and at t=0 it equals x_init exactly.

``preview`` (optional) sees the model's running estimate of the finished images after chosen
steps: the x0 prediction x_t - t v (known regions pasted in), and after the last step the result
itself — the intermediate images a streaming caller is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Denoiser = Callable[[F32, F32, I64], F32]
Preview = Callable[[int, F32], None]
"""``(step, x0)``: called after ``step`` (0-based) with the x0 prediction of every row."""


@dataclass(frozen=True)
class Row:
    """One image to sample (arrays at the model's native size, channels first)."""

    tokens: I64  # (NUM_SLOTS,)
    noise: F32  # (3, S, S) standard normal, derived from the request seed
    guidance: float = 3.0
    t_start: float = 1.0
    init: F32 | None = None  # (3, S, S) in [-1, 1]
    known: F32 | None = None  # (1, S, S): 1 = keep init pixel, 0 = repaint


def start_state(row: Row) -> F32:
    if row.init is None:
        return row.noise.copy()
    t = np.float32(row.t_start)
    return ((1 - t) * row.init + t * row.noise).astype(np.float32)


def sample(rows: Sequence[Row], steps: int, model: Denoiser, *, preview: Preview | None = None,
           preview_at: frozenset[int] = frozenset()) -> F32:
    """Run ``steps`` Euler steps for all rows; one ``model`` call per step; ``preview`` is called
    after each step in ``preview_at``.

    Returns images in [-1, 1], shape (len(rows), 3, S, S). Rows with guidance != 1
    get an extra unconditional row (all-``<none>`` tokens) in the same call.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    n = len(rows)
    x = np.stack([start_state(r) for r in rows]).astype(np.float32)
    tokens = np.stack([r.tokens for r in rows]).astype(np.int64)
    g = np.array([r.guidance for r in rows], np.float32)
    t0 = np.array([r.t_start for r in rows], np.float32)
    cfg_idx = np.flatnonzero(g != 1.0)
    uncond_tokens = np.zeros((len(cfg_idx), tokens.shape[1]), np.int64)
    all_tokens = np.concatenate([tokens, uncond_tokens])
    for k in range(steps):
        # Each row follows its own linear schedule t_start -> 0 in `steps` steps.
        t_cur = (t0 * (1 - k / steps)).astype(np.float32)
        t_next = (t0 * (1 - (k + 1) / steps)).astype(np.float32)
        xin = np.concatenate([x, x[cfg_idx]])
        tin = np.concatenate([t_cur, t_cur[cfg_idx]])
        v_all = model(xin, tin, all_tokens)
        v = v_all[:n].copy()
        if len(cfg_idx):
            vu = v_all[n:]
            gi = g[cfg_idx][:, None, None, None]
            v[cfg_idx] = vu + gi * (v[cfg_idx] - vu)
        x = (x + (t_next - t_cur)[:, None, None, None] * v).astype(np.float32)
        for i, r in enumerate(rows):
            if r.known is not None and r.init is not None:
                tn = t_next[i]
                ref = (1 - tn) * r.init + tn * r.noise
                x[i] = r.known * ref + (1 - r.known) * x[i]
        if preview is not None and k in preview_at:
            preview(k, x.copy() if k == steps - 1 else _x0(rows, x, t_next, v))
    return x


def _x0(rows: Sequence[Row], x: F32, t: F32, v: F32) -> F32:
    """The model's estimate of the finished images at time ``t``: x_t - t v, known pixels kept."""
    x0 = (x - t[:, None, None, None] * v).astype(np.float32)
    for i, r in enumerate(rows):
        if r.known is not None and r.init is not None:
            x0[i] = r.known * r.init + (1 - r.known) * x0[i]
    return x0


def preview_steps(steps: int, count: int) -> frozenset[int]:
    """``count`` steps spread evenly over ``steps``, the last step always among them."""
    count = min(count, steps)
    return frozenset(round((i + 1) * steps / count) - 1 for i in range(count)) if count > 0 else frozenset()


def to_uint8(x: F32) -> npt.NDArray[np.uint8]:
    """(N, 3, S, S) in [-1, 1] -> list-like (N, S, S, 3) uint8."""
    img = np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img.transpose(0, 2, 3, 1))


def from_uint8(img: npt.NDArray[np.uint8]) -> F32:
    """(S, S, 3) uint8 -> (3, S, S) float32 in [-1, 1] (exact inverse of :func:`to_uint8`)."""
    return (img.astype(np.float32).transpose(2, 0, 1) / np.float32(127.5) - 1).astype(np.float32)
