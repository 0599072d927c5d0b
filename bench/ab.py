"""Scenario 1 (small image, instant upstream) at concurrency 1, A/B between two source trees.

    python bench/ab.py --base /tmp/ab-base/src [--rounds 8] [--seconds 4]

Runs the bench upstream once and two imagegate processes side by side — ``--base`` (another
checkout's ``src``, put first on ``PYTHONPATH`` so it shadows this one) and this tree — and
drives them in alternating rounds, so whatever else the machine is doing hits both alike. Each
row: median over rounds of the p50 latency and of the server CPU per request; *added* is the
p50 minus the direct upstream's p50 of the same round. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # bench/run.py: servers, load generator, CPU accounting


def start(upstream: str, base: str | None, name: str) -> run.Server:
    saved = os.environ.get("PYTHONPATH")
    if base:
        os.environ["PYTHONPATH"] = base + (os.pathsep + saved if saved else "")
    old_out = run.OUT
    run.OUT = old_out / f"ab-{name}"
    run.OUT.mkdir(parents=True, exist_ok=True)
    try:
        return run.start_imagegate(upstream, workers=1)
    finally:
        run.OUT = old_out
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the baseline tree's src directory")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args()
    run.OUT.mkdir(parents=True, exist_ok=True)
    bench = run.Bench(argparse.Namespace(load_processes=1))
    upstream = run.start_upstream(1)
    bench.servers["upstream"] = upstream
    bench.servers["base"] = start(upstream.url, args.base, "base")
    bench.servers["head"] = start(upstream.url, None, "head")
    rows: dict[str, list[run.Row]] = {"direct": [], "base": [], "head": []}
    try:
        for target in ("base", "head"):  # warm both up: imports, first connections, key cache
            bench.load(target, "small-0", "b64_json", concurrency=1, duration=2)
        for i in range(args.rounds):
            order = ("direct", "base", "head") if i % 2 == 0 else ("direct", "head", "base")
            for target in order:
                rows[target].append(bench.row("small-0", target, "b64_json", concurrency=1, duration=args.seconds))
    finally:
        for server in bench.servers.values():
            server.stop()
    direct = [r.p50 for r in rows["direct"]]
    print("| tree | p50 ms | added p50 ms | server CPU ms/request | req/s | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for target in ("base", "head"):
        rs = rows[target]
        added = statistics.median(r.p50 - d for r, d in zip(rs, direct, strict=True))
        print(f"| {target} | {statistics.median(r.p50 for r in rs):.3f} | {added:.3f} | "
              f"{statistics.median(r.server_cpu_ms for r in rs):.3f} | {statistics.median(r.rps for r in rs):.0f} | "
              f"{sum(sum(r.errors.values()) for r in rs)} |")


if __name__ == "__main__":
    main()
