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
from pathlib import Path

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
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "localmodel.md",
                    help="also write the table here (bench/run.py copies it into docs/benchmarks.md)")
    args = ap.parse_args()
    lines = [
        f"Embedded model throughput (`python bench/localmodel.py`): {os.cpu_count()} CPU cores, "
        f"{args.steps} sampling steps, {args.rounds} rounds per row, one engine worker.",
        "",
        "| concurrent requests | batching | images/s | mean round latency (s) |",
        "| --- | --- | --- | --- |",
    ]
    print("\n".join(lines), flush=True)
    for c in (1, 4, 16):
        for batching in (True, False):
            ips, lat = asyncio.run(measure(batching, c, args.rounds, args.steps))
            lines.append(f"| {c} | {'on' if batching else 'off'} | {ips:.1f} | {lat:.2f} |")
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
