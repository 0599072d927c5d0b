"""Embedded text-to-image engine: onnxruntime session, request batching, image I/O.

Concurrency model: ``generate`` never runs the model on the event loop. Requests
that arrive within ``batch_window_s`` of each other are coalesced into one
sampler run, i.e. ONE onnxruntime call per denoising step for all of them
(up to ``max_batch`` model rows; classifier-free guidance costs two rows per
image). Sampler runs execute on a thread pool of ``max_concurrency`` workers,
which bounds CPU use; intra-op threads are split between those workers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image

from imagegate import metrics

from . import vocab
from .sampler import F32, I64, Preview, Row, from_uint8, preview_steps, sample, to_uint8

U8 = npt.NDArray[np.uint8]

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ONNX_NAME = "shapes.onnx"
META_NAME = "model.json"
SUMS_NAME = "SHA256SUMS"
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 3.0
DEFAULT_STRENGTH = 0.6
MAX_STEPS = 200


class WeightsError(RuntimeError):
    """The embedded model's weights are missing, corrupted or incompatible."""


@dataclass(frozen=True)
class LocalRequest:
    """One generation request for the embedded model.

    ``strength`` defaults to ``None``: 0.6 for image-to-image and 1.0 for
    inpainting (a masked region should be fully repainted unless asked otherwise).
    """

    prompt: str
    n: int = 1
    seed: int | None = None  # None -> random; same seed -> same pixels; negative wraps to unsigned 64-bit
    init_image: U8 | None = None  # HxWx3 uint8, any size (resized to native)
    strength: float | None = None  # img2img: 0 keeps the init image, 1 ignores it
    mask: npt.NDArray[np.bool_] | None = None  # HxW, True = repaint; requires init_image
    guidance: float | None = None  # None -> engine default
    steps: int | None = None
    partials: int = 0  # intermediate images to report through on_partial (streaming callers)
    on_partial: Callable[[int, list[U8]], None] | None = None
    """``(index, images)``: the running estimate of the ``n`` images, called ``partials`` times (the
    last time with the final images) from a worker thread. Such a request is sampled on its own."""


@dataclass
class EngineStats:
    """Counters exposed for tests and metrics (updated under a lock)."""

    onnx_calls: int = 0  # denoiser invocations (one per step per batch)
    sampler_runs: int = 0  # batches sampled
    images: int = 0
    batch_rows: list[int] = field(default_factory=list)  # model rows per sampler run


@dataclass
class _Job:
    rows: list[Row]
    steps: int
    future: asyncio.Future[list[U8]]
    results: list[U8 | None]
    remaining: int


def verify_weights(weights_dir: Path) -> None:
    """Check every file listed in SHA256SUMS; raise :class:`WeightsError` on any mismatch."""
    sums = weights_dir / SUMS_NAME
    if not sums.is_file():
        raise WeightsError(f"{sums} is missing; refusing to load unverified weights")
    listed: dict[str, str] = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            listed[name.strip().lstrip("*")] = digest.lower()
    for required in (ONNX_NAME, META_NAME):
        if required not in listed:
            raise WeightsError(f"{sums} does not list {required}")
    for name, digest in listed.items():
        path = weights_dir / name
        if not path.is_file():
            raise WeightsError(f"weights file {path} is missing")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != digest:
            raise WeightsError(
                f"checksum mismatch for {path}: expected {digest}, got {actual}; "
                "the embedded model weights are corrupted (reinstall the package)"
            )


def seed_noise(seed: int, index: int, size: int) -> F32:
    """Noise for image ``index`` of a request: depends only on (seed, index), not on batching."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    return rng.standard_normal((3, size, size), dtype=np.float32)


def _to_native(img: U8, size: int) -> U8:
    # Edits stretch the whole reference onto the square canvas (no crop), so every
    # reference pixel has a generated counterpart when compositing back.
    arr = np.ascontiguousarray(img[..., :3].astype(np.uint8))
    if arr.shape[:2] == (size, size):
        return arr
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def _mask_to_native(mask: npt.NDArray[np.bool_], size: int) -> F32:
    """Known-region map (1 = keep) at native size: a native pixel is repainted if ANY
    pixel it covers is masked, so masked output pixels always get generated content."""
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BOX)
    frac = np.asarray(m, np.float32) / 255.0
    return (frac <= 0.0).astype(np.float32)[None]


def upscale(img: U8, width: int, height: int) -> U8:
    """Resize a generated image to ``width x height`` without distortion.

    Lanczos (best edge sharpness for flat-colour shapes among PIL filters; ringing
    is limited because the model's edges are already anti-aliased). For a
    non-square size the square image is scaled to *cover* the target and
    centre-cropped (nothing is squashed; a little of the edges is lost).
    """
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img.copy()
    scale = max(width / w, height / h)
    cw, ch = max(width, round(w * scale)), max(height, round(h * scale))
    big = Image.fromarray(img).resize((cw, ch), Image.Resampling.LANCZOS)
    left, top = (cw - width) // 2, (ch - height) // 2
    return np.asarray(big.crop((left, top, left + width, top + height)), dtype=np.uint8)


def composite(original: U8, generated: U8, mask: npt.NDArray[np.bool_]) -> U8:
    """Paste ``generated`` into ``original`` where ``mask`` is True; other pixels stay bit-identical.

    ``generated`` may be at native size: it is then stretched (Lanczos) onto the
    original's full frame, matching how the engine maps edit inputs to native.
    """
    h, w = original.shape[:2]
    if mask.shape != (h, w):
        raise ValueError(f"mask shape {mask.shape} does not match image {(h, w)}")
    gen = generated
    if gen.shape[:2] != (h, w):
        gen = np.asarray(Image.fromarray(generated).resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8)
    out = original[..., :3].copy()
    out[mask] = gen[mask]
    return out


class ShapesEngine:
    """The embedded shapes model (see docs/models/imagegate-shapes.md)."""

    native_size: int

    def __init__(
        self,
        session: ort.InferenceSession,
        meta: dict[str, Any],
        *,
        max_batch: int = 16,
        max_concurrency: int = 1,
        batching: bool = True,
        batch_window_s: float = 0.005,
        default_steps: int = DEFAULT_STEPS,
        default_guidance: float = DEFAULT_GUIDANCE,
    ) -> None:
        if max_batch < 2:
            raise ValueError("max_batch must be >= 2 (guidance uses two rows per image)")
        self._session = session
        self.meta = meta
        self.native_size = int(meta["image_size"])
        self.max_batch = max_batch
        self.max_concurrency = max(1, max_concurrency)
        self.batching = batching
        self.batch_window_s = batch_window_s
        self.default_steps = default_steps
        self.default_guidance = default_guidance
        self.stats = EngineStats()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="shapes")
        self._pending: list[_Job] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def load(
        cls,
        weights_dir: Path | None = None,
        *,
        max_batch: int = 16,
        max_concurrency: int = 1,
        batching: bool = True,
        **kwargs: Any,
    ) -> ShapesEngine:
        """Verify the SHA-256 of the weights and open an onnxruntime CPU session."""
        wd = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
        verify_weights(wd)
        meta: dict[str, Any] = json.loads((wd / META_NAME).read_text())
        if list(meta.get("vocab", [])) != list(vocab.VOCAB):
            raise WeightsError("weights were trained with a different caption vocabulary")
        opts = ort.SessionOptions()
        # Split the cores between concurrent sampler runs instead of oversubscribing.
        opts.intra_op_num_threads = max(1, (os.cpu_count() or 1) // max(1, max_concurrency))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(wd / ONNX_NAME), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise WeightsError(f"cannot load {wd / ONNX_NAME}: {e}") from e
        return cls(session, meta, max_batch=max_batch, max_concurrency=max_concurrency, batching=batching, **kwargs)

    # ---- prompt handling -------------------------------------------------

    def understood(self, prompt: str) -> str:
        """What the model understood from ``prompt`` (the gateway's ``revised_prompt``)."""
        return vocab.understood(prompt)

    # ---- request -> rows ---------------------------------------------------

    def _rows(self, req: LocalRequest) -> tuple[list[Row], int]:
        if req.n < 1:
            raise ValueError("n must be >= 1")
        steps = self.default_steps if req.steps is None else int(req.steps)
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be in 1..{MAX_STEPS}")
        guidance = self.default_guidance if req.guidance is None else float(req.guidance)
        # numpy's SeedSequence takes non-negative integers only: a negative seed wraps (two's complement)
        seed = secrets.randbits(63) if req.seed is None else int(req.seed) % 2**64
        s = self.native_size
        tokens: I64 = np.asarray(vocab.parse(req.prompt).tokens(), np.int64)
        init: F32 | None = None
        known: F32 | None = None
        t_start = 1.0
        if req.mask is not None and req.init_image is None:
            raise ValueError("mask requires init_image")
        if req.init_image is not None:
            if req.init_image.ndim != 3 or req.init_image.shape[2] < 3:
                raise ValueError("init_image must be HxWx3 uint8")
            init = from_uint8(_to_native(req.init_image, s))
            default = 1.0 if req.mask is not None else DEFAULT_STRENGTH
            t_start = float(np.clip(default if req.strength is None else req.strength, 0.0, 1.0))
            if req.mask is not None:
                if req.mask.shape != req.init_image.shape[:2]:
                    raise ValueError("mask must have the same HxW as init_image")
                known = _mask_to_native(req.mask, s)
        rows = [Row(tokens, seed_noise(seed, i, s), guidance, t_start, init, known) for i in range(req.n)]
        return rows, steps

    def _model_rows(self, rows: list[Row]) -> int:
        return sum(2 if r.guidance != 1.0 else 1 for r in rows)

    # ---- model execution (worker threads) --------------------------------

    def _denoise(self, x: F32, t: F32, tokens: I64) -> F32:
        with self._lock:
            self.stats.onnx_calls += 1
        out = self._session.run(None, {"x": x, "t": t, "tokens": tokens})[0]
        return np.asarray(out, np.float32)

    def _run_rows(self, rows: list[Row], steps: int, preview: Preview | None = None, partials: int = 0) -> list[U8]:
        if not rows:
            return []
        if steps == 0 or all(r.t_start == 0.0 for r in rows):
            # strength 0: nothing to sample, return the (resized) init image.
            x = np.stack([r.init if r.init is not None else r.noise for r in rows])
        else:
            x = sample(rows, steps, self._denoise, preview=preview, preview_at=preview_steps(steps, partials))
        with self._lock:
            self.stats.sampler_runs += 1
            self.stats.images += len(rows)
            self.stats.batch_rows.append(self._model_rows(rows))
        metrics.batch(self._model_rows(rows))
        return list(to_uint8(x))

    def _chunks(self, rows: list[Row]) -> list[list[Row]]:
        out: list[list[Row]] = []
        cur: list[Row] = []
        used = 0
        for r in rows:
            cost = 2 if r.guidance != 1.0 else 1
            if cur and used + cost > self.max_batch:
                out.append(cur)
                cur, used = [], 0
            cur.append(r)
            used += cost
        if cur:
            out.append(cur)
        return out

    def generate_sync(self, req: LocalRequest) -> list[U8]:
        """Blocking generation without cross-request batching (scripts, tests)."""
        rows, steps = self._rows(req)
        images: list[U8] = []
        for chunk in self._chunks(rows):
            images += self._run_rows(chunk, steps)
        return images

    # ---- async API with coalescing -----------------------------------------

    async def generate(self, req: LocalRequest) -> list[U8]:
        """Generate ``req.n`` native-size images without blocking the event loop."""
        rows, steps = self._rows(req)
        loop = asyncio.get_running_loop()
        if req.on_partial is not None and req.partials > 0:
            return await loop.run_in_executor(self._executor, self._run_previewed, rows, steps, req)
        if not self.batching:
            images: list[U8] = []
            for chunk in self._chunks(rows):
                images += await loop.run_in_executor(self._executor, self._run_rows, chunk, steps)
            return images
        fut: asyncio.Future[list[U8]] = loop.create_future()
        self._pending.append(_Job(rows, steps, fut, [None] * len(rows), len(rows)))
        pending_rows = sum(self._model_rows(j.rows) for j in self._pending)
        if pending_rows >= self.max_batch:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(self.batch_window_s, self._flush)
        return await fut

    def _run_previewed(self, rows: list[Row], steps: int, req: LocalRequest) -> list[U8]:
        """All of one request's rows in one run, reporting ``req.partials`` intermediate images."""
        assert req.on_partial is not None
        report = req.on_partial
        order = sorted(preview_steps(steps, req.partials))

        def preview(step: int, x0: F32) -> None:
            report(order.index(step), list(to_uint8(x0)))

        return self._run_rows(rows, steps, preview, req.partials)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        jobs, self._pending = self._pending, []
        # Rows can only share model calls if they take the same number of steps.
        by_steps: dict[int, list[tuple[_Job, int]]] = {}
        for job in jobs:
            for i in range(len(job.rows)):
                by_steps.setdefault(job.steps, []).append((job, i))
        for steps, refs in by_steps.items():
            chunk: list[tuple[_Job, int]] = []
            used = 0
            for job, i in refs:
                cost = 2 if job.rows[i].guidance != 1.0 else 1
                if chunk and used + cost > self.max_batch:
                    self._launch(chunk, steps)
                    chunk, used = [], 0
                chunk.append((job, i))
                used += cost
            if chunk:
                self._launch(chunk, steps)

    def _launch(self, refs: list[tuple[_Job, int]], steps: int) -> None:
        task = asyncio.get_running_loop().create_task(self._run_chunk(refs, steps))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_chunk(self, refs: list[tuple[_Job, int]], steps: int) -> None:
        loop = asyncio.get_running_loop()
        rows = [job.rows[i] for job, i in refs]
        try:
            images = await loop.run_in_executor(self._executor, self._run_rows, rows, steps)
        except Exception as e:  # propagate to every waiting request
            for job, _ in refs:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        for (job, i), img in zip(refs, images, strict=True):
            job.results[i] = img
            job.remaining -= 1
            if job.remaining == 0 and not job.future.done():
                job.future.set_result([r for r in job.results if r is not None])

    async def aclose(self) -> None:
        """Finish queued work and release the worker threads."""
        if self._pending:
            self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)
