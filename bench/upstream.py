"""A minimal, fast OpenAI-compatible image upstream for the benchmarks.

``POST /v1/images/generations`` whose prompt holds ``bench:<image>-<latency_ms>`` answers,
after ``latency_ms`` milliseconds, a pre-encoded ``{"created", "data": [{"b64_json"}],
"output_format", "usage"}`` body: ``<image>`` is ``small`` (a 1×1 PNG) or ``large`` (a ~2 MB PNG
of noise, which does not compress). The scenario rides in the prompt, which every gateway passes
through untouched, so one upstream, one imagegate channel and one LiteLLM model entry
(``gpt-image-1``) serve every scenario, and a scenario is answered the same way whoever asks.

The answer bodies are built once at start-up; a request costs reading its body and writing
bytes, so the upstream is never the bottleneck (``--processes N`` starts N processes sharing the
port with ``SO_REUSEPORT`` if one ever were).

    python bench/upstream.py --port 9100 [--processes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import os
import random
import re
import socket
import time

from aiohttp import web

LARGE_SIDE = 816  # 816×816 RGB noise ≈ 2.0 MB as PNG (noise does not compress)


def png(side: int, *, seed: int = 7) -> bytes:
    """A PNG of ``side``×``side`` pixels; noise (incompressible) above 1×1."""
    from PIL import Image

    rnd = random.Random(seed)
    raw = rnd.randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), raw).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def images() -> dict[str, bytes]:
    return {"small": png(1), "large": png(LARGE_SIDE)}


def answer_body(image: bytes) -> bytes:
    return json.dumps({
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(image).decode()}],
        "output_format": "png",
        "usage": {"input_tokens": 10, "output_tokens": 100, "total_tokens": 110,
                  "input_tokens_details": {"text_tokens": 10, "image_tokens": 0}},
    }).encode()


def make_app() -> web.Application:
    bodies = {name: answer_body(data) for name, data in images().items()}
    scenario = re.compile(rb"bench:(small|large)-(\d+)")

    async def generations(request: web.Request) -> web.Response:
        found = scenario.search(await request.read())
        if found is None:
            return web.json_response({"error": {"message": "the prompt names no bench:<image>-<ms> scenario",
                                                "type": "invalid_request_error"}}, status=400)
        body, latency = bodies[found[1].decode()], int(found[2]) / 1000
        if latency:
            await asyncio.sleep(latency)
        return web.Response(body=body, content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "gpt-image-1", "object": "model"}]})

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/v1/images/generations", generations)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", models)
    return app


def serve(sock: socket.socket) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(), sock=sock, print=None, access_log=None, backlog=8192)


def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(8192)
    return sock


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--processes", type=int, default=1)
    args = p.parse_args()
    if args.processes == 1:
        serve(listen(args.port))
        return
    procs = [multiprocessing.Process(target=serve, args=(listen(args.port),)) for _ in range(args.processes)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    os._exit(0)


if __name__ == "__main__":
    main()
