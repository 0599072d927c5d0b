"""Closed-loop HTTP load generator (aiohttp) for the benchmarks.

``C`` workers each send one request, wait for the whole answer, and send the next, for ``D``
seconds or until ``R`` requests were sent; every request's latency (send → last byte) and every
error is recorded. ``--processes P`` splits the workers over P processes that start together, so
the generator is not the bottleneck; the merged result is printed as one JSON object:

    {"ok", "errors": {reason: count}, "elapsed", "rps", "latencies": [seconds, ...], "bytes"}

    python bench/load.py --url http://127.0.0.1:9100/s/small-0/v1/images/generations \
        --body '{"model": "gpt-image-1", "prompt": "a cat"}' --concurrency 16 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Result:
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    bytes: int = 0
    first: float = float("inf")
    last: float = 0.0

    def add(self, other: Result) -> None:
        self.ok += other.ok
        self.errors.update(other.errors)
        self.latencies.extend(other.latencies)
        self.bytes += other.bytes
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)

    def to_json(self) -> dict[str, Any]:
        elapsed = max(self.last - self.first, 1e-9) if self.ok or self.errors else 0.0
        return {"ok": self.ok, "errors": dict(self.errors), "elapsed": elapsed,
                "rps": self.ok / elapsed if elapsed else 0.0, "latencies": self.latencies,
                "bytes": self.bytes, "first": self.first, "last": self.last}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Result:
        return cls(ok=d["ok"], errors=Counter(d["errors"]), latencies=d["latencies"], bytes=d["bytes"],
                   first=d["first"], last=d["last"])


async def run(url: str, body: bytes, headers: dict[str, str], *, concurrency: int, duration: float | None,
              requests: int | None, expect: bytes, timeout: float, start_at: float) -> Result:
    res = Result()
    sent = 0
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    headers = {"Content-Type": "application/json", **headers}
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout,
                                     skip_auto_headers=("User-Agent",)) as session:
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.perf_counter()
        wall0 = time.time()
        stop = t0 + duration if duration is not None else float("inf")

        async def worker() -> None:
            nonlocal sent
            while True:
                if requests is not None:
                    if sent >= requests:
                        return
                    sent += 1
                if time.perf_counter() >= stop:
                    return
                start = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        data = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    res.errors[type(exc).__name__] += 1
                    continue
                end = time.perf_counter()
                if status != 200:
                    res.errors[f"HTTP {status}: {data[:160].decode(errors='replace')}"] += 1
                elif expect not in data:
                    res.errors[f"no {expect.decode()!r} in answer"] += 1
                else:
                    res.ok += 1
                    res.bytes += len(data)
                    res.latencies.append(end - start)
                    res.last = max(res.last, wall0 + (end - t0))

        res.first = wall0
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if not res.ok:
            res.last = wall0 + (time.perf_counter() - t0)
    return res


def _child(args: argparse.Namespace, concurrency: int, requests: int | None, start_at: float,
           out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    res = asyncio.run(run(args.url, args.body.encode(), dict(h.split(":", 1) for h in args.header),
                          concurrency=concurrency, duration=args.duration, requests=requests,
                          expect=args.expect.encode(), timeout=args.timeout, start_at=start_at))
    out.send(res.to_json())
    out.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--body", required=True, help="JSON request body")
    p.add_argument("--header", action="append", default=[], help="'Name:value', repeatable")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, help="seconds (default: until --requests are sent)")
    p.add_argument("--requests", type=int)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--expect", default='"data"', help="a substring every good answer holds")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    if args.duration is None and args.requests is None:
        p.error("give --duration or --requests")
    procs = max(1, min(args.processes, args.concurrency))
    start_at = time.time() + 0.3 * procs  # every process is connected and waiting by then
    pipes, children = [], []
    for i in range(procs):
        conc = args.concurrency // procs + (1 if i < args.concurrency % procs else 0)
        reqs = None if args.requests is None else args.requests // procs + (1 if i < args.requests % procs else 0)
        parent, child = multiprocessing.Pipe(duplex=False)
        proc = multiprocessing.Process(target=_child, args=(args, conc, reqs, start_at, child))
        proc.start()
        pipes.append(parent)
        children.append(proc)
    total = Result()
    for pipe in pipes:
        total.add(Result.from_json(pipe.recv()))
    for proc in children:
        proc.join()
    json.dump(total.to_json(), sys.stdout)


if __name__ == "__main__":
    main()
