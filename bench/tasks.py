"""Async-task benchmark: submissions per second, and upstream completion → ``SUCCESS`` visible.

Two real gateway processes on SQLite (``tests/harness.py``), in front of a trivial loopback
OpenAI-style upstream that answers at once with a 64×64 PNG and notes when it answered each
prompt:

- **submit**: a gateway with ``tasks.workers: 0`` (it only accepts tasks, as a front-end
  replica would), ``C`` concurrent clients each posting ``?async=true`` generations back to back;
  reported as accepted tasks per second (validation, SSRF checks, hold, insert, answer).
- **finish**: a gateway with ``--workers`` task workers; ``C`` tasks submitted at once. For each
  task, the time from the upstream's answer to the moment its ``SUCCESS`` row is committed and
  readable (the benchmark polls the database every 2 ms, read-only, as another replica would);
  this covers decoding, storing the image, settling and the terminal transaction, plus any wait
  for a worker slot or the database lock. Also the wall time until all ``C`` are done.

    .venv/bin/python bench/tasks.py [--levels 1,50,500] [--workers 16]

Prints a markdown table and writes it to ``bench/results/tasks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import GatewayProcess, channel, start_gateway  # noqa: E402


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Upstream:
    """A loopback ``POST /v1/images/generations`` that answers at once and records when."""

    def __init__(self) -> None:
        self.done: dict[str, float] = {}
        self.port = 0
        self._body = {"created": int(time.time()), "data": [{"b64_json": _png()}], "output_format": "png",
                      "usage": {"input_tokens": 5, "output_tokens": 10, "total_tokens": 15}}
        self._ready = threading.Event()

    def start(self) -> Upstream:
        threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        self._ready.wait(10)
        return self

    async def _serve(self) -> None:
        async def generations(request: web.Request) -> web.Response:
            prompt = (await request.json())["prompt"]
            resp = web.json_response(self._body)
            self.done[prompt] = time.time()
            return resp

        app = web.Application()
        app.add_routes([web.post("/v1/images/generations", generations)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await asyncio.Event().wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def gateway(root: Path, upstream: Upstream, workers: int) -> GatewayProcess:
    return start_gateway(root, {
        "channels": [channel("up", "openai", upstream.url, {"gpt-image-1": "gpt-image-1"}, timeout=60)],
        "local_model": False,
        "tasks": {"workers": workers, "poll_seconds": 0.5},
        "limits": {},
    })


async def submit_many(gw: GatewayProcess, key: str, prompts: list[str], concurrency: int) -> tuple[list[str], float]:
    """Submit every prompt with ``concurrency`` clients; return task ids and elapsed seconds."""
    queue = list(reversed(prompts))
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {key}"}
    url = gw.url + "/v1/images/generations?async=true"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        async def client() -> None:
            while queue:
                prompt = queue.pop()
                async with http.post(url, json={"model": "gpt-image-1", "prompt": prompt}, headers=headers) as r:
                    body = await r.json()
                    if r.status != 200:
                        raise RuntimeError(f"submit failed: {r.status} {body}")
                    ids.append(body["task_id"])

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return ids, time.perf_counter() - started


def watch_success(gw: GatewayProcess, ids: list[str], timeout: float = 600) -> dict[str, float]:
    """Poll the database (read-only) until every task is SUCCESS; id → when it was first seen."""
    seen: dict[str, float] = {}
    wanted = set(ids)
    db = sqlite3.connect(f"file:{gw.root / 'imagegate.db'}?mode=ro", uri=True, timeout=30)
    try:
        deadline = time.time() + timeout
        while len(seen) < len(ids) and time.time() < deadline:
            now = time.time()
            for task_id, status in db.execute("SELECT id, status FROM tasks WHERE status IN ('SUCCESS', 'FAILURE')"):
                if task_id in wanted and task_id not in seen:
                    if status != "SUCCESS":
                        raise RuntimeError(f"task {task_id} failed")
                    seen[task_id] = now
            time.sleep(0.002)
        prompts = dict(db.execute("SELECT id, json_extract(request, '$.prompt') FROM tasks").fetchall())
    finally:
        db.close()
    if len(seen) < len(ids):
        raise RuntimeError(f"only {len(seen)} of {len(ids)} tasks finished")
    return {prompts[i]: t for i, t in seen.items()}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="1,50,500")
    ap.add_argument("--workers", type=int, default=16, help="task workers of the finishing gateway")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "tasks.md"))
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    upstream = Upstream().start()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        front = gateway(Path(tmp) / "front", upstream, workers=0)
        back = gateway(Path(tmp) / "back", upstream, workers=args.workers)
        try:
            front_key, back_key = front.key(), back.key()
            for c in levels:
                total = max(200, 2 * c)
                ids, elapsed = asyncio.run(submit_many(front, front_key, [f"s{c}-{i}" for i in range(total)], c))
                submit_rate = len(ids) / elapsed

                prompts = [f"f{c}-{i}" for i in range(c)]
                t0 = time.time()
                ids, _ = asyncio.run(submit_many(back, back_key, prompts, min(c, 100)))
                visible = watch_success(back, ids)
                drain = max(visible.values()) - t0
                lags = [(visible[p] - upstream.done[p]) * 1000 for p in prompts]
                rows.append((c, total, submit_rate, statistics.median(lags), pct(lags, 0.95), max(lags), drain))
                print(f"C={c}: {submit_rate:.0f} submits/s; lag p50 {rows[-1][3]:.1f} ms, "
                      f"p95 {rows[-1][4]:.1f} ms; all {c} done in {drain:.2f} s", flush=True)
        finally:
            front.stop()
            back.stop()

    table = [
        f"# Async tasks on SQLite ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{len(__import__('os').sched_getaffinity(0))} CPUs, python {platform.python_version()})",
        "",
        "Submissions: a gateway with `tasks.workers: 0`, C concurrent clients posting "
        "`?async=true` generations back to back (at least 200 per level). "
        f"Finishing: a gateway with `tasks.workers: {args.workers}`; C tasks submitted at once; lag = upstream "
        "answered → `SUCCESS` committed and readable (database polled every 2 ms). "
        "Upstream: a loopback OpenAI-style endpoint answering at once with a 64×64 PNG; unlimited account (no holds).",
        "",
        "| concurrent tasks | submissions | submissions/s | lag p50 (ms) | lag p95 (ms) | lag max (ms) "
        "| all done after (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {c} | {n} | {r:.0f} | {p50:.1f} | {p95:.1f} | {mx:.1f} | {d:.2f} |" for c, n, r, p50, p95, mx, d in rows],
        "",
    ]
    text = "\n".join(table)
    print("\n" + text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
