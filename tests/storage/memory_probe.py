"""Run by ``test_a_20_mb_image_round_trip_in_bounded_memory`` in a fresh process: stores a 20 MB
image in S3 and reads it back, and prints how far each step pushed the process's resident memory
above where it started, as a multiple of the image's size.

Resident memory (``VmHWM``, its high-water mark, reset through ``/proc/self/clear_refs`` before
each step) counts what the S3 client allocates in Rust too, which ``tracemalloc`` cannot see. The
steps run in an order where no large block was freed before a step (an allocator could reuse it
unseen): put, then the streamed read, then ``get``.

    python -m tests.storage.memory_probe ENDPOINT REGION BUCKET PREFIX KEY_ID SECRET
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys

from imagegate.config import StorageConfig
from imagegate.storage import UrlSigner
from imagegate.storage.s3 import S3BlobStore

SIZE = 20 * 1024 * 1024


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _start() -> int:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    return _status("VmRSS")


def _growth(start: int) -> float:
    return (_status("VmHWM") - start) / SIZE


async def main(endpoint: str, region: str, bucket: str, prefix: str, key_id: str, secret: str) -> None:
    cfg = StorageConfig(endpoint_url=endpoint, region=region, access_key_id=key_id, secret_access_key=secret)
    store = S3BlobStore(bucket, prefix, cfg, "http://testserver", UrlSigner(b"x"))
    warm = await store.put(b"\x89PNG warm-up", content_type="image/png")  # pools, runtime, credentials
    await store.get(warm)
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(SIZE - 8)

    start = _start()
    key = await store.put(data, content_type="image/png")
    put = _growth(start)

    start = _start()
    streamed, largest = 0, 0
    async for chunk in store.read(key):
        streamed += len(chunk)
        largest = max(largest, len(chunk))
    stream = _growth(start)

    start = _start()
    got = await store.get(key)
    get = _growth(start)
    same = got == data
    print(json.dumps({"put": put, "stream": stream, "get": get, "same": same, "streamed": streamed,
                      "largest_chunk": largest}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
