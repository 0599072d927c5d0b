"""Measure adherence of exported weights and draw the model-card sample grid (no torch needed).

    python training/evaluate.py --weights src/imagegate/localmodel/weights \
        --grid docs/models/imagegate-shapes-grid.png

Prints a markdown table of per-attribute adherence over fixed prompt/seed sets
(larger than the test suite's) plus the checker's own accuracy on ground-truth
renders of the same captions, which is the ceiling the model can reach.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dataset
from adherence import check, single_object, two_objects

from imagegate.localmodel import LocalRequest, ShapesEngine, upscale
from imagegate.localmodel.vocab import Caption

GRID_PROMPTS = [
    "a red circle",
    "a large blue star on the left on a yellow background",
    "a green square and a small white ring",
    "a small orange triangle in the top right corner on a black background",
    "a large pink ring in the center on a gray background",
    "a cyan star at the bottom on a purple background",
    "a yellow circle on the left and a red square on the right on a blue background",
    "a large white triangle on a green background",
    "a small black square in the bottom left corner on a white background",
    "a brown star at the top and a cyan circle at the bottom on a pink background",
    "a purple square on the right on an orange background",
    "a medium gray ring on the left on a red background",
]


async def _generate(engine: ShapesEngine, cases: list[tuple[Caption, int]]) -> list[np.ndarray]:
    reqs = [LocalRequest(cap.text(), seed=seed) for cap, seed in cases]
    out = await asyncio.gather(*(engine.generate(r) for r in reqs))
    return [o[0] for o in out]


def _table(engine: ShapesEngine, name: str, cases: list[tuple[Caption, int]]) -> list[str]:
    images = asyncio.run(_generate(engine, cases))
    acc: dict[str, list[bool]] = defaultdict(list)
    truth: dict[str, list[bool]] = defaultdict(list)
    for (cap, seed), img in zip(cases, images, strict=True):
        for k, v in check(img, cap).items():
            acc[k].append(v)
        rng = np.random.default_rng(seed)
        gt = np.rint(dataset.render(dataset.scene_from_caption(cap, rng, engine.native_size), engine.native_size) * 255)
        for k, v in check(gt.astype(np.uint8), cap).items():
            truth[k].append(v)
    rows = []
    for k in ("background", "color", "position", "size", "shape"):
        if k in acc:
            rows.append(f"| {name} | {k} | {np.mean(acc[k]):.3f} | {np.mean(truth[k]):.3f} | {len(acc[k])} |")
    return rows


def grid(engine: ShapesEngine, path: Path, cell: int = 128) -> None:
    seeds = [1, 2, 3, 4]
    label_w = 300
    img = Image.new("RGB", (label_w + cell * len(seeds), cell * len(GRID_PROMPTS)), "white")
    draw = ImageDraw.Draw(img)
    for r, prompt in enumerate(GRID_PROMPTS):
        draw.multiline_text((6, r * cell + 8), _wrap(prompt, 40), fill="black", spacing=3)
        for c, seed in enumerate(seeds):
            out = engine.generate_sync(LocalRequest(prompt, seed=seed))[0]
            img.paste(Image.fromarray(upscale(out, cell, cell)), (label_w + c * cell, r * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def _wrap(text: str, width: int) -> str:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--grid", type=Path, default=None)
    ap.add_argument("--single", type=int, default=108)
    ap.add_argument("--two", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    engine = ShapesEngine.load(args.weights, max_batch=64, max_concurrency=max(1, 2 // args.threads))
    print("| prompts | attribute | model | checker on ground truth | n |")
    print("| --- | --- | --- | --- | --- |")
    small = single_object(args.single, sizes=("small", "medium", "large"))
    for line in _table(engine, "one object", small) + _table(engine, "two objects", two_objects(args.two)):
        print(line, flush=True)
    if args.grid:
        grid(engine, args.grid)
        print(f"wrote {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
