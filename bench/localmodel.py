"""Throughput of the embedded shapes model: images/s at 1, 4 and 16 concurrent requests.

    python bench/localmodel.py [--rounds 3] [--steps 20]

Each round fires C concurrent ``generate`` calls (n=1, default guidance, so two
model rows per image) and waits for all of them; images/s = images / wall time.
"With batching" coalesces concurrent requests into one ONNX call per step
(max_batch=32 rows, enough for 16 images); "without" runs them one by one on
the same single worker. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from imagegate.localmodel import LocalRequest, ShapesEngine


async def _round(engine: ShapesEngine, concurrency: int, steps: int, seed: int) -> None:
    reqs = [
        LocalRequest("a large blue star on the left on a yellow background", seed=seed + i, steps=steps)
        for i in range(concurrency)
    ]
    await asyncio.gather(*(engine.generate(r) for r in reqs))


async def measure(batching: bool, concurrency: int, rounds: int, steps: int) -> tuple[float, float]:
    engine = ShapesEngine.load(max_batch=32, max_concurrency=1, batching=batching)
    await _round(engine, concurrency, steps, 0)  # warm-up (session init, allocator)
    lat = []
    t0 = time.perf_counter()
    for r in range(rounds):
        t = time.perf_counter()
        await _round(engine, concurrency, steps, 100 * (r + 1))
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    await engine.aclose()
    return rounds * concurrency / wall, sum(lat) / len(lat)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    print(f"cpu cores: {os.cpu_count()}, steps: {args.steps}, rounds: {args.rounds}")
    print("| concurrent requests | batching | images/s | mean round latency (s) |")
    print("| --- | --- | --- | --- |")
    for c in (1, 4, 16):
        for batching in (True, False):
            ips, lat = asyncio.run(measure(batching, c, args.rounds, args.steps))
            print(f"| {c} | {'on' if batching else 'off'} | {ips:.1f} | {lat:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
