"""Prompt adherence of the shipped model, measured with the rule-based checker.

Thresholds are set a little below what the shipped weights reach on these exact
prompt/seed pairs (see docs/models/imagegate-shapes.md for the larger set), so
broken weights, a broken sampler or a broken caption encoding fail here.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import numpy as np
from training.adherence import check, read, single_object, two_objects

from imagegate.localmodel import LocalRequest, ShapesEngine

# The shipped weights reach background/colour/position 1.0, size 0.93 and shape 0.50
# (chance: 0.20) on the 30 single-object cases, and background 1.0 / both colours 0.92
# on the 12 two-object cases (two-object *positions* are not learned yet: see the model
# card). Unconditional sampling scores <= 0.13 here, so a broken caption path,
# sampler or weights fails these.
SINGLE_MIN = {"background": 0.9, "color": 0.9, "position": 0.9, "size": 0.85, "shape": 0.4}
TWO_MIN = {"background": 0.9, "color": 0.8}


async def _scores(engine: ShapesEngine, cases: list) -> dict[str, float]:  # type: ignore[type-arg]
    reqs = [LocalRequest(cap.text(), seed=seed) for cap, seed in cases]
    images = await asyncio.gather(*(engine.generate(r) for r in reqs))
    acc: dict[str, list[bool]] = defaultdict(list)
    for (cap, _), imgs in zip(cases, images, strict=True):
        for k, v in check(imgs[0], cap).items():
            acc[k].append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}


async def test_single_object_adherence(engine: ShapesEngine) -> None:
    cases = single_object(30)
    scores = await _scores(engine, cases)
    for attr, minimum in SINGLE_MIN.items():
        assert scores[attr] >= minimum, (attr, scores)


async def test_two_object_adherence(engine: ShapesEngine) -> None:
    scores = await _scores(engine, two_objects(12))
    for attr, minimum in TWO_MIN.items():
        assert scores[attr] >= minimum, (attr, scores)


def test_unknown_words_still_draw(engine: ShapesEngine) -> None:
    prompt = "a majestic cat in the style of van gogh"
    assert engine.understood(prompt) == "random shapes"
    img = engine.generate_sync(LocalRequest(prompt, seed=1))[0]
    assert img.shape == (engine.native_size, engine.native_size, 3)
    assert read(img).objects  # something was drawn on a background


def test_guidance_matters(engine: ShapesEngine) -> None:
    # Without the caption (guidance 0 = unconditional) the colour request is
    # honoured far less often than with the default guidance.
    cases = single_object(12)
    hits = {0.0: 0, None: 0}
    for g in hits:
        for cap, seed in cases:
            img = engine.generate_sync(LocalRequest(cap.text(), seed=seed, guidance=g))[0]
            hits[g] += check(img, cap)["background"]
    assert hits[None] >= hits[0.0] + 6
