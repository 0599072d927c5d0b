"""What ``GET /files/`` and the sweeper rely on, alike for both stores: ``stat`` and the chunked
``read`` of a byte range."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegate.storage import BlobStore, LocalBlobStore
from tests.storage.conftest import SIGNER, S3Server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs", "http://testserver", SIGNER)
    server: S3Server = request.getfixturevalue("s3_server")
    return server.store()


async def test_stat_and_ranged_reads(store: BlobStore) -> None:
    data = bytes(range(256)) * 4000  # 1 MB: more than one chunk
    key = await store.put(data, content_type="image/webp", prefix="task-in")
    info = await store.stat(key)
    assert info is not None and info.size == len(data)

    async def read(start: int = 0, end: int | None = None) -> bytes:
        return b"".join([chunk async for chunk in store.read(key, start, end)])

    assert await read() == data
    assert await read(1, 2) == data[1:2]
    assert await read(len(data) - 5) == data[-5:]
    assert await read(300_000, 700_001) == data[300_000:700_001]
    assert await read(10, 10) == b""

    await store.delete(key)
    assert await store.stat(key) is None
    with pytest.raises(KeyError):
        await read()
    assert await store.stat("img/2026/11/24/../../etc.png") is None
