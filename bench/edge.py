"""The request edge's cost per request: ``RequestEdge`` (request id, in-flight gauge, the JSON log
line, the per-request metrics) and the metric and log hooks a sync request fires, without sockets.

    python bench/edge.py [--n 20000] [--repeats 7] [--src OTHER/src] [--callgrind]

Drives a trivial ASGI app directly (one coroutine step per request, each in a fresh copy of the
context as an asyncio task would be) ``--n`` times per repeat, in three variants interleaved
within each repeat:

- ``bare``: the app alone (two ``send`` calls);
- ``hooks``: the app firing what a sync image request fires below the edge (``metrics.upstream``
  and ``logs.upstream_time``, ``logs.annotate`` with the job's, the upstream's and the usage
  record's fields, ``metrics.job_done``, ``metrics.stored``, ``UrlSigner.owner_tag``) but no edge;
- ``edge``: ``RequestEdge`` around the hooked app: the whole cost is ``edge - bare``.

Logs are set up as ``imagegate serve`` sets them up (``logs.setup``, stderr not a terminal: JSON
lines); each variant runs in a child process whose stderr is a file, checked afterwards to hold one
line per request. Two modes: single process (metrics in memory) and multi-process
(``PROMETHEUS_MULTIPROC_DIR`` set before prometheus-client is imported: mmap-backed values).
Prints the median µs per request over the repeats. ``--src`` puts another tree's ``src`` first on
``PYTHONPATH`` (a before/after comparison: run both, alternately). ``--callgrind [N]`` also counts
the edge's instructions per request under valgrind: the edge variant's run minus the bare one's,
over ``N`` requests (default 2000; about a minute per child).
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("bare", "hooks", "edge")
WARMUP = 500

SCOPE_HEADERS = [
    (b"host", b"127.0.0.1:8000"), (b"user-agent", b"OpenAI/Python 1.99.0"), (b"accept", b"application/json"),
    (b"content-type", b"application/json"), (b"content-length", b"87"),
    (b"authorization", b"Bearer sk-ig-0123456789abcdef0123456789abcdef"),
]


def child(args: argparse.Namespace) -> None:
    """One process: set logs up like ``serve``, build the variants, time them (or just run them)."""
    from imagegate import logs, metrics
    from imagegate.api.observe import Drain, RequestEdge
    from imagegate.storage.signing import UrlSigner

    assert not sys.stderr.isatty()
    logs.setup(level="info", fmt="auto")
    signer = UrlSigner(b"bench-secret-bench-secret-bench-")
    account, key_id = "acc_7f3a9c2e5b1d4f60", "key_1b2c3d4e"

    def fire() -> None:
        ctx = logs.current()  # answer._log_job
        if ctx is not None:
            ctx.sync_job = True
            ctx.fields.update(surface="images", model="gpt-image-1", account=account, key_id=key_id)
        logs.annotate(upstream_id="req_0123456789abcdef")  # providers/base.py
        metrics.upstream("primary", "submit", 0.00031)  # gateway._upstream_time
        logs.upstream_time(0.00031)
        signer.owner_tag(account)  # gateway: the stored image's key
        metrics.stored(41234)
        metrics.job_done("images", "gpt-image-1", "primary", "success", 1)  # billing/usage.py
        logs.annotate(channel="primary", outcome="success", images=1, cost=0)

    async def send(message: Any) -> None:
        pass

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    def app(hooks: bool) -> Any:
        async def inner(scope: Any, receive: Any, send: Any) -> None:
            if hooks:
                fire()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"{}"})
        return inner

    apps = {"bare": app(False), "hooks": app(True), "edge": RequestEdge(app(True), Drain())}
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/images/generations", "raw_path": b"/v1/images/generations", "query_string": b"",
             "root_path": "", "headers": SCOPE_HEADERS, "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8000)}

    def drive(target: Any) -> None:
        coro = target(scope, receive, send)
        try:
            coro.send(None)
        except StopIteration:
            return
        raise RuntimeError("the app suspended")

    def run(target: Any, n: int) -> float:
        copy = contextvars.copy_context
        began = time.perf_counter()
        for _ in range(n):
            copy().run(drive, target)
        return time.perf_counter() - began

    names = [args.only] if args.only else list(VARIANTS)
    for name in names:
        run(apps[name], WARMUP)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            gc.collect()
            times[name].append(run(apps[name], args.n) / args.n * 1e6)
    sys.stderr.flush()
    print(json.dumps({name: statistics.median(ts) for name, ts in times.items()}
                     | {"_all": times}), flush=True)


def spawn(args: argparse.Namespace, mode: str, extra: list[str], wrap: list[str] | None = None
          ) -> tuple[dict[str, Any], int]:
    """Run the child in ``mode`` (``single`` or ``multi``); its answer and its stderr's line count."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("prometheus_multiproc_dir", None)
    if args.src:
        env["PYTHONPATH"] = args.src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        if mode == "multi":
            env["PROMETHEUS_MULTIPROC_DIR"] = tmp + "/metrics"
            os.mkdir(tmp + "/metrics")
        log = Path(tmp) / "stderr"
        with log.open("wb") as err:
            out = subprocess.run([*(wrap or []), sys.executable, __file__, "--child", *extra],
                                 env=env, stdout=subprocess.PIPE, stderr=err, check=False)
        text = log.read_bytes()
        if out.returncode != 0:
            sys.exit(f"child failed ({mode}):\n{text.decode(errors='replace')[-3000:]}")
        lines = text.count(b"\n")
        stray = [ln for ln in text.splitlines() if not ln.startswith(b"{")]
        if stray:
            sys.exit(f"unexpected stderr ({mode}): {stray[:3]!r}")
        return json.loads(out.stdout.decode().splitlines()[-1]), lines


def instructions(args: argparse.Namespace, mode: str, variant: str, n: int) -> int:
    """Instructions executed by the child running ``variant`` alone (valgrind callgrind's total Ir)."""
    with tempfile.TemporaryDirectory(prefix="edge-cg-") as tmp:
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", f"--log-file={tmp}/log"]
        spawn(args, mode, ["--only", variant, "--n", str(n), "--repeats", "1"], wrap)
        found = re.search(r"Collected : (\d+)", Path(tmp, "log").read_text())
        assert found, Path(tmp, "log").read_text()
        return int(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000, help="requests per variant per repeat")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--src", help="another tree's src directory, first on PYTHONPATH")
    p.add_argument("--modes", default="single,multi")
    p.add_argument("--callgrind", type=int, nargs="?", const=2000, default=0, metavar="N",
                   help="also count instructions per request over N requests (default 2000)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    print(f"µs per request, median of {args.repeats} × {args.n} (src: {args.src or 'this tree'})")
    print("| mode | bare | hooks | edge | edge − bare |" + (" Ir edge − bare |" if args.callgrind else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|" if args.callgrind else ""))
    for mode in args.modes.split(","):
        result, lines = spawn(args, mode, ["--n", str(args.n), "--repeats", str(args.repeats)])
        expected = (WARMUP + args.n * args.repeats)
        if lines != expected:
            sys.exit(f"{mode}: {lines} log lines on stderr, expected {expected}")
        row = f"| {mode} | {result['bare']:.2f} | {result['hooks']:.2f} | {result['edge']:.2f} | " \
              f"{result['edge'] - result['bare']:.2f} |"
        if args.callgrind:
            # Both children import and set up the same, then run WARMUP + N requests of their variant.
            extra = instructions(args, mode, "edge", args.callgrind) - instructions(args, mode, "bare", args.callgrind)
            row += f" {extra / (WARMUP + args.callgrind):,.0f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
