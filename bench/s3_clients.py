"""S3 client benchmark (issue #14): a 2 MB image put and read back, through obstore (what
``S3BlobStore`` uses) and through aiobotocore (the asyncio botocore; aioboto3 wraps it).

Both talk to the same S3-compatible server on loopback, moto's standalone server started here
(``moto[server]``), one operation at a time, after a warm-up. Reported per client: the median and
p90 wall time of a put and of a get, and the CPU time this process spent per put + get (all its
threads: obstore works in its own Rust threads). The server is a Python process of its own, so its
time is in the wall numbers but not in the CPU column; with a real S3 or MinIO the wall times
shrink, the CPU column stays. Each client runs in a fresh process. (Memory is measured by
``tests/storage/test_s3.py::test_a_20_mb_image_round_trip_in_bounded_memory``, for obstore.)

    .venv/bin/python bench/s3_clients.py [--rounds 40]

Prints a markdown table and writes it to ``bench/results/s3_clients.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZE = 2 * 1024 * 1024
BUCKET = "bench"
KEY_ID, SECRET, REGION = "bench-key", "bench-secret", "us-east-1"


@dataclass
class Row:
    client: str
    put: list[float]
    get: list[float]
    cpu_per_round: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1).close()
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=5).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


async def measure(name: str, put: Callable[[str, bytes], Awaitable[None]], get: Callable[[str], Awaitable[bytes]],
                  rounds: int) -> Row:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(SIZE - 8)
    for i in range(3):  # warm-up: connections, credentials, code paths
        await put(f"{name}/warm-{i}.png", data)
        assert await get(f"{name}/warm-{i}.png") == data
    puts: list[float] = []
    gets: list[float] = []
    cpu = time.process_time()
    for i in range(rounds):
        key = f"{name}/{i}.png"
        t = time.perf_counter()
        await put(key, data)
        puts.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = await get(key)
        gets.append(time.perf_counter() - t)
        assert len(got) == SIZE
        del got
    cpu = (time.process_time() - cpu) / rounds
    return Row(name, puts, gets, cpu)


async def bench_obstore(endpoint: str, rounds: int) -> Row:
    import obstore
    from obstore.store import S3Store

    s3 = S3Store(BUCKET, endpoint=endpoint, region=REGION, access_key_id=KEY_ID, secret_access_key=SECRET,
                 virtual_hosted_style_request=False, client_options={"allow_http": True})

    async def put(key: str, data: bytes) -> None:
        await obstore.put_async(s3, key, data, attributes={"Content-Type": "image/png"})

    async def get(key: str) -> bytes:
        return bytes(await (await obstore.get_async(s3, key)).bytes_async())

    return await measure("obstore", put, get, rounds)


async def bench_aiobotocore(endpoint: str, rounds: int) -> Row:
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", endpoint_url=endpoint, region_name=REGION,
                                           aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET) as client:
        c: Any = client

        async def put(key: str, data: bytes) -> None:
            await c.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/png")

        async def get(key: str) -> bytes:
            resp = await c.get_object(Bucket=BUCKET, Key=key)
            async with resp["Body"] as body:
                data: bytes = await body.read()
            return data

        return await measure("aiobotocore", put, get, rounds)


def render(rows: list[Row], rounds: int) -> str:
    from importlib.metadata import version

    def p50(v: list[float]) -> str:
        return f"{statistics.median(v) * 1000:.1f}"

    def p90(v: list[float]) -> str:
        return f"{statistics.quantiles(v, n=10)[8] * 1000:.1f}"

    head = (f"# S3 clients, 2 MB put + get ({datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, python {platform.python_version()})\n\n"
            f"`python bench/s3_clients.py --rounds {rounds}`: one client at a time against moto's standalone "
            f"S3 server on loopback (moto {version('moto')}), {rounds} rounds after a warm-up, one operation "
            "in flight. Wall times include the server (a Python process); the CPU column is this "
            "process's own time per put + get, all threads, each client in a fresh process.\n\n"
            "| client | version | put p50 (ms) | put p90 (ms) | get p50 (ms) | get p90 (ms) "
            "| client CPU per put+get (ms) |\n"
            "|---|---|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r.client} | {version(r.client)} | {p50(r.put)} | {p90(r.put)} | {p50(r.get)} | {p90(r.get)} "
             f"| {r.cpu_per_round * 1000:.1f} |" for r in rows]
    return head + "\n".join(lines) + "\n"


CLIENTS = {"obstore": bench_obstore, "aiobotocore": bench_aiobotocore}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "s3_clients.md"))
    ap.add_argument("--one", choices=CLIENTS, help=argparse.SUPPRESS)  # a child: one client, JSON out
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(asdict(asyncio.run(CLIENTS[args.one](args.endpoint, args.rounds)))))
        return
    proc, endpoint = start_moto()
    try:  # each client in a fresh process, so neither inherits the other's memory or threads
        rows = [Row(**json.loads(subprocess.run(
            [sys.executable, __file__, "--one", name, "--endpoint", endpoint, "--rounds", str(args.rounds)],
            check=True, capture_output=True, text=True).stdout)) for name in CLIENTS]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    text = render(rows, args.rounds)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
