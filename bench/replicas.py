"""Throughput with 1, 2 and 3 replicas: ``imagegate serve`` processes sharing one PostgreSQL
database and one Redis, driven together (issue #14).

    python bench/replicas.py [--duration 8] [--concurrency 32]   # writes bench/results/replicas.md

For each replica count N: a fresh PostgreSQL database (127.0.0.1:5432, as in the tests), N
gateways with one worker process each (``redis_url`` on 127.0.0.1:6379), the bench upstream
(``bench/upstream.py``, 1×1 PNG as ``b64_json``, latency 0: the gateway's own cost dominates) and
``--generators`` ``bench/load.py`` processes (3; the same in every row, generator i on replica
i mod N) sharing concurrency C, all for the same seconds. Reported:
requests/s in total, the gateways' CPU seconds per second (cores busy) and requests per
gateway-CPU-second (the per-core figure), from /proc. Runs are short: the machine is shared.
The script writes the table; the analysis under it in bench/results/replicas.md is written by hand
for the run it describes (re-add it after a new run). ``bench/run.py`` copies the file into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from run import BENCH, OUT, PY, Server, cpu_seconds, free_port, start_upstream, tree, wait_http

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379"
RESULT = BENCH / "results" / "replicas.md"


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def start_replicas(n: int, upstream: str, db: str, root: Path) -> list[Server]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN", "FAL_KEY"))}
    servers, procs = [], []
    for i in range(n):
        home = root / f"replica{i}"
        home.mkdir(parents=True)
        port = free_port()
        cfg = home / "imagegate.yaml"
        cfg.write_text(json.dumps({
            "public_url": f"http://127.0.0.1:{port}", "database_url": db, "redis_url": REDIS,
            "storage_url": f"file://{root / 'images'}", "local_model": False,
            "channels": [{"name": "bench", "provider": "openai", "base_url": upstream + "/v1",
                          "api_key": "sk-bench-upstream", "models": {"gpt-image-1": "gpt-image-1"}, "timeout": 300}],
        }))
        logf = home / "gateway.log"
        proc = subprocess.Popen([PY, "-m", "imagegate", "--config", str(cfg), "serve", "--port", str(port),
                                 "--log-level", "warning"], cwd=home, env=env, stdout=logf.open("wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        servers.append(Server(f"replica{i}", proc, f"http://127.0.0.1:{port}", log_path=logf))
        procs.append((proc, cfg))
    for s in servers:
        wait_http(s.url + "/healthz", s.proc, s.name)
    keys = subprocess.run([PY, "-m", "imagegate", "--config", str(procs[0][1]), "keys", "create", "--name", "bench"],
                          cwd=root, env=env, capture_output=True, text=True, check=True)
    key = keys.stdout.strip().splitlines()[-1]
    for s in servers:
        s.key = key
    return servers


def drive(servers: list[Server], concurrency: int, duration: float, generators: int) -> dict[str, Any]:
    body = json.dumps({"model": "gpt-image-1", "prompt": "bench:small-0", "response_format": "b64_json"})
    pids = [p for s in servers for p in tree(s.proc.pid)]
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    loads = [subprocess.Popen([PY, str(BENCH / "load.py"), "--url", s.url + "/v1/images/generations", "--body", body,
                               "--header", f"Authorization:Bearer {s.key}",
                               "--concurrency", str(max(1, concurrency // generators)),
                               "--duration", str(duration)], stdout=subprocess.PIPE)
             for s in (servers[i % len(servers)] for i in range(generators))]
    results = [json.loads(p.communicate()[0]) for p in loads]
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pids) - cpu0
    ok = sum(r["ok"] for r in results)
    errors = sum(sum(r["errors"].values()) for r in results)
    elapsed = max(r["elapsed"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    return {"replicas": len(servers), "ok": ok, "errors": errors, "rps": ok / elapsed,
            "cores": cpu / wall, "per_core": ok / cpu if cpu else 0.0,
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description="imagegate throughput with 1, 2 and 3 replicas (docs/benchmarks.md).")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--replicas", default="1,2,3")
    p.add_argument("--generators", type=int, default=3,
                   help="load generator processes in every row (replica i %% N gets generator i): the harness "
                        "stays the same whatever N is")
    args = p.parse_args()
    OUT.mkdir(exist_ok=True)
    upstream = start_upstream(1)
    rows = []
    try:
        for n in (int(x) for x in args.replicas.split(",")):
            name = f"imagegate_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(admin(f"CREATE DATABASE {name}"))
            root = OUT / "replicas"
            shutil.rmtree(root, ignore_errors=True)
            servers = start_replicas(n, upstream.url, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", root)
            try:
                drive(servers, args.concurrency, 2.0, args.generators)  # warm-up
                rows.append(drive(servers, args.concurrency, args.duration, args.generators))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            finally:
                for s in servers:
                    s.stop()
                asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))
    finally:
        upstream.stop()
    cpus = os.cpu_count()
    lines = [f"#### Replicas on one machine ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {cpus} CPUs, "
             f"python {platform.python_version()})", "",
             f"`python bench/replicas.py --duration {args.duration:g} --concurrency {args.concurrency} "
             f"--generators {args.generators}`: N "
             "`imagegate serve` processes (one worker each) on one PostgreSQL database and one Redis, the bench "
             f"upstream (1×1 PNG as `b64_json`, latency 0) and {args.generators} load generator processes (the same in "
             "every row, spread over the replicas), all on this "
             f"machine's {cpus} cores; {args.duration:g} s per row after a 2 s warm-up; an unlimited key "
             "(no ledger writes). *cores busy* = the gateways' CPU seconds per second; *per core* = requests per "
             "gateway CPU second.", "",
             "| replicas | requests/s | errors | p50 (ms) | gateway cores busy | requests per gateway core-second |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['replicas']} | {r['rps']:.0f} | {r['errors']} | {r['p50_ms']:.1f} | {r['cores']:.2f} | "
              f"{r['per_core']:.0f} |" for r in rows]
    RESULT.write_text("\n".join(lines) + "\n")
    print(RESULT.read_text())


if __name__ == "__main__":
    main()
