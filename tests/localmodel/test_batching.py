"""Concurrent requests are coalesced into one ONNX batch and give the unbatched pixels."""

from __future__ import annotations

import asyncio

import numpy as np

from imagegate.localmodel import LocalRequest, ShapesEngine

STEPS = 6


async def test_two_concurrent_requests_share_onnx_calls() -> None:
    eng = ShapesEngine.load(max_batch=16)
    reqs = [
        LocalRequest("a red circle on the left", seed=11, steps=STEPS),
        LocalRequest("a blue star on a yellow background", seed=12, n=2, steps=STEPS),
    ]
    expected = [eng.generate_sync(r) for r in reqs]
    before = eng.stats.onnx_calls, eng.stats.sampler_runs
    got = await asyncio.gather(*(eng.generate(r) for r in reqs))
    calls = eng.stats.onnx_calls - before[0]
    runs = eng.stats.sampler_runs - before[1]
    # One sampler run for both requests -> one ONNX call per step (not 2 * STEPS).
    assert (calls, runs) == (STEPS, 1)
    assert eng.stats.batch_rows[-1] == 2 * 3  # 3 images, conditional + unconditional rows
    for exp, out in zip(expected, got, strict=True):
        assert len(out) == len(exp)
        for a, b in zip(exp, out, strict=True):
            # Same seed -> same pixels, whatever else shared the batch.
            assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 1
            assert np.mean(a == b) > 0.999
    await eng.aclose()


async def test_without_batching_each_request_runs_alone() -> None:
    eng = ShapesEngine.load(batching=False)
    reqs = [LocalRequest("a red circle", seed=1, steps=STEPS), LocalRequest("a green ring", seed=2, steps=STEPS)]
    await asyncio.gather(*(eng.generate(r) for r in reqs))
    assert (eng.stats.onnx_calls, eng.stats.sampler_runs) == (2 * STEPS, 2)
    await eng.aclose()


async def test_rows_beyond_max_batch_are_split() -> None:
    eng = ShapesEngine.load(max_batch=4)  # two images (CFG doubles rows) per run
    out = await eng.generate(LocalRequest("a white square", seed=3, n=5, steps=2))
    assert len(out) == 5
    assert eng.stats.sampler_runs == 3
    assert max(eng.stats.batch_rows) <= 4
    await eng.aclose()


async def test_generate_does_not_block_the_event_loop() -> None:
    eng = ShapesEngine.load()
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await eng.generate(LocalRequest("a pink star", seed=4, n=4, steps=10))
    stop.set()
    await t
    assert ticks > 10
    await eng.aclose()


def test_same_seed_same_pixels_and_seed_none_varies(engine: ShapesEngine) -> None:
    a = engine.generate_sync(LocalRequest("a yellow triangle", seed=5, steps=4))
    b = engine.generate_sync(LocalRequest("a yellow triangle", seed=5, steps=4))
    assert np.array_equal(a[0], b[0])
    c = engine.generate_sync(LocalRequest("a yellow triangle", seed=None, steps=4))
    d = engine.generate_sync(LocalRequest("a yellow triangle", seed=None, steps=4))
    assert not np.array_equal(c[0], d[0])
