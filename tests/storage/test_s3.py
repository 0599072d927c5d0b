"""The S3 store (``storage_url: s3://bucket/prefix``) against a real S3-compatible server process
(moto, checking signatures: see ``conftest.py``): objects, ranges, listing for retention,
presigned URLs, the ``/files/`` route streaming from the bucket, memory, and where its settings
come from."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import obstore
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from obstore.exceptions import PermissionDeniedError
from PIL import Image

from imagegate.api.files import router
from imagegate.config import ConfigError, StorageConfig, load_settings
from imagegate.storage import new_key, open_store
from imagegate.storage.s3 import S3BlobStore
from tests.storage.conftest import SIGNER, S3Server, new_prefix

ROOT = Path(__file__).resolve().parents[2]


def png(w: int = 40, h: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


async def test_put_get_read_stat_delete(s3_server: S3Server) -> None:
    store = s3_server.store()
    data = png() + bytes(range(256)) * 40
    key = await store.put(data, content_type="image/png", owner="0123456789abcdef")
    assert key.startswith(f"img/{datetime.now(UTC):%Y/%m/%d}/0123456789abcdef-") and key.endswith(".png")
    assert await store.get(key) == data
    info = await store.stat(key)
    assert info is not None and info.size == len(data) and abs(info.modified - time.time()) < 60
    assert b"".join([c async for c in store.read(key, 10, 20)]) == data[10:20]
    assert b"".join([c async for c in store.read(key, 100)]) == data[100:]
    assert b"".join([c async for c in store.read(key)]) == data
    assert store.local_path(key) is None
    # The object sits under the store's prefix in the bucket, typed for direct downloads.
    raw = s3_server.store(prefix="")
    meta = await obstore.head_async(raw._s3, f"{store.prefix}/{key}")
    assert meta["size"] == len(data)
    assert (await obstore.get_async(raw._s3, f"{store.prefix}/{key}")).attributes["Content-Type"] == "image/png"

    await store.delete(key)
    with pytest.raises(KeyError):
        await store.get(key)
    assert await store.stat(key) is None
    with pytest.raises(KeyError):
        [c async for c in store.read(key)]
    await store.delete(key)  # deleting a missing object is not an error


async def test_malformed_keys_never_reach_the_bucket(s3_server: S3Server) -> None:
    store = s3_server.store()
    for key in ("../x.png", "img/2026/11/24/../../../x.png", "img/2026/11/24"):
        with pytest.raises(KeyError):
            await store.get(key)
        assert await store.stat(key) is None
        with pytest.raises(ValueError):
            await store.delete(key)
        with pytest.raises(ValueError):
            store.url_for(key)


async def test_a_wrong_secret_is_refused(s3_server: S3Server) -> None:
    """The server checks signatures, so the other tests show the configured keys are used."""
    cfg = StorageConfig(endpoint_url=s3_server.endpoint, region=s3_server.region,
                        access_key_id=s3_server.access_key_id, secret_access_key="not-the-secret")
    store = S3BlobStore(s3_server.bucket, new_prefix(), cfg, "http://testserver", SIGNER)
    with pytest.raises(PermissionDeniedError):
        await store.put(png(), content_type="image/png")


async def test_configured_keys_take_no_token_from_the_environment(s3_server: S3Server,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings are resolved once in ``load_settings``; the S3 client must not add its own."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-token-for-other-keys")
    store = s3_server.store()
    key = await store.put(png(), content_type="image/png")
    assert await store.get(key) == png()


async def test_keys_older_than_lists_by_last_modified_up_to_the_cutoff_day(s3_server: S3Server) -> None:
    store = s3_server.store()
    now = time.time()
    today = await store.put(png(), content_type="image/png")
    upload = await store.put(png(), content_type="image/png", prefix="task-in")
    # Objects written now under keys of other days: an old day is listed (its objects are judged
    # by LastModified), a day after the cutoff's is not even listed.
    old = new_key("image/png", now=datetime.fromtimestamp(now - 40 * 86400, UTC))
    future = new_key("image/png", now=datetime.fromtimestamp(now + 3 * 86400, UTC))
    for key in (old, future):
        await obstore.put_async(store._s3, key, png())

    async def listed(cutoff: float, batch: int = 1000) -> list[list[str]]:
        return [b async for b in store.keys_older_than(cutoff, batch=batch)]

    assert sorted(k for b in await listed(now + 60) for k in b) == sorted([old, today, upload])
    assert await listed(now - 3600) == []  # all were written just now
    batches = await listed(now + 60, batch=1)
    assert [len(b) for b in batches] == [1, 1, 1] and batches[0] == [old]  # oldest day first

    for batch in batches:  # deleting a batch before asking for the next is allowed
        for key in batch:
            await store.delete(key)
    assert await listed(now + 60) == []
    assert await store.stat(future) is not None


async def test_presigned_urls_download_from_the_bucket(s3_server: S3Server) -> None:
    store = s3_server.store(presign=True)
    data = png(64, 48)
    key = await store.put(data, content_type="image/png")
    url = store.url_for(key, ttl=120)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == s3_server.endpoint  # path-style, plain http
    assert parts.path == f"/{s3_server.bucket}/{store.prefix}/{key}"
    query = parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["120"] and query["X-Amz-Signature"]
    assert query["X-Amz-Credential"][0].startswith(f"{s3_server.access_key_id}/")
    assert f"/{s3_server.region}/s3/" in query["X-Amz-Credential"][0]
    with s3_server.unchecked():
        resp = httpx.get(url)
    assert resp.status_code == 200 and resp.content == data
    assert resp.headers["content-type"] == "image/png"
    # The longest a SigV4 presigned URL may live is 7 days.
    assert parse_qs(urlsplit(store.url_for(key, ttl=30 * 86400)).query)["X-Amz-Expires"] == ["604800"]


async def test_without_presign_urls_are_the_gateways_own(s3_server: S3Server) -> None:
    store = s3_server.store()
    key = await store.put(png(), content_type="image/png")
    parts = urlsplit(store.url_for(key, ttl=600))
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"http://testserver/files/{key}"
    query = parse_qs(parts.query)
    assert SIGNER.verify(key, int(query["expires"][0]), query["sig"][0])


@pytest.fixture
def files(s3_server: S3Server) -> tuple[TestClient, S3BlobStore]:
    store = s3_server.store()
    app = FastAPI()
    app.include_router(router)
    app.state.store, app.state.urls = store, store.urls
    return TestClient(app), store


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_the_files_route_streams_from_the_bucket(files: tuple[TestClient, S3BlobStore]) -> None:
    client, store = files
    data = png() + bytes(range(256)) * 40
    key = asyncio.run(store.put(data, content_type="image/png"))
    url = local(store.url_for(key, ttl=600))

    resp = client.get(url)
    assert resp.status_code == 200 and resp.content == data
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["content-length"] == str(len(data)) and resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["x-content-type-options"] == "nosniff"
    cache = resp.headers["cache-control"]
    assert cache.startswith("private, max-age=") and 595 <= int(cache.rpartition("=")[2]) <= 600

    head = client.head(url)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(data))

    n = len(data)
    first = client.get(url, headers={"Range": "bytes=0-9"})
    assert first.status_code == 206 and first.content == data[:10]
    assert first.headers["content-range"] == f"bytes 0-9/{n}" and first.headers["content-length"] == "10"
    suffix = client.get(url, headers={"Range": "bytes=-5"})
    assert suffix.status_code == 206 and suffix.content == data[-5:]
    assert suffix.headers["content-range"] == f"bytes {n - 5}-{n - 1}/{n}"
    tail = client.get(url, headers={"Range": "bytes=100-"})
    assert tail.status_code == 206 and tail.content == data[100:]
    past = client.get(url, headers={"Range": f"bytes={n}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{n}"
    beyond = client.get(url, headers={"Range": f"bytes=10-{n + 100}"})
    assert beyond.status_code == 206 and beyond.content == data[10:]
    # A stale If-Range, or several ranges: the whole object, as RFC 9110 allows.
    stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"some-other-etag"'})
    assert stale.status_code == 200 and stale.content == data
    fresh = client.get(url, headers={"Range": "bytes=0-9", "If-Range": resp.headers["etag"]})
    assert fresh.status_code == 206 and fresh.content == data[:10]
    several = client.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == data

    asyncio.run(store.delete(key))
    gone = client.get(url)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert client.get(url.replace("sig=", "sig=AA")).status_code == 403
    expired = f"/files/{key}?expires={int(time.time()) - 1}&sig={SIGNER.sign(key, int(time.time()) - 1)}"
    assert client.get(expired).json()["error"]["code"] == "url_expired"


def test_a_20_mb_image_round_trip_in_bounded_memory(s3_server: S3Server) -> None:
    """Writing hands the client the caller's bytes without a copy, the ``/files/`` stream never
    holds the object, and ``get`` holds it at most twice (the client's buffer and the bytes)."""
    out = subprocess.run([sys.executable, "-m", "tests.storage.memory_probe", s3_server.endpoint, s3_server.region,
                          s3_server.bucket, new_prefix(), s3_server.access_key_id, s3_server.secret_access_key],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["same"] and got["streamed"] == 20 * 1024 * 1024, got
    assert got["largest_chunk"] <= 4 * 1024 * 1024, got
    assert got["put"] < 0.25, got
    assert got["stream"] < 0.5, got
    assert got["put"] + got["get"] < 2.5, got


def test_open_store_builds_an_s3_store(s3_server: S3Server) -> None:
    store = open_store("s3://imagegate-test/some/prefix/", public_url="http://gw", secret=b"s",
                       storage=s3_server.config())
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("imagegate-test", "some/prefix")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "imagegate.yaml"
    path.write_text(text)
    return str(path)


AWS_ENV = {"AWS_ENDPOINT_URL": "http://minio.internal:9000", "AWS_REGION": "eu-central-1",
           "AWS_ACCESS_KEY_ID": "env-id", "AWS_SECRET_ACCESS_KEY": "env-secret", "AWS_SESSION_TOKEN": "env-token"}


def test_s3_settings_come_from_the_aws_variables(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "storage_url: s3://bucket/images\n"), env=AWS_ENV).storage
    assert (s.endpoint_url, s.region) == ("http://minio.internal:9000", "eu-central-1")
    assert (s.access_key_id, s.secret_access_key, s.session_token) == ("env-id", "env-secret", "env-token")
    assert s.uses_path_style and not s.presign
    region = load_settings(write(tmp_path, "storage_url: s3://bucket\n"), env={"AWS_DEFAULT_REGION": "ap-south-1"})
    assert region.storage.region == "ap-south-1" and region.storage.endpoint_url is None
    assert not region.storage.uses_path_style  # AWS itself: virtual-hosted addressing
    # A file store takes nothing from them.
    assert load_settings(write(tmp_path, "storage_url: file://./x\n"), env=AWS_ENV).storage.access_key_id is None


def test_the_file_wins_over_the_aws_variables(tmp_path: Path) -> None:
    text = ("storage_url: s3://bucket/images\nstorage:\n  endpoint_url: https://s3.example.com/\n"
            "  region: us-west-2\n  access_key_id: file-id\n  secret_access_key: file-secret\n"
            "  path_style: false\n  presign: true\n")
    s = load_settings(write(tmp_path, text), env=AWS_ENV).storage
    assert (s.endpoint_url, s.region) == ("https://s3.example.com", "us-west-2")
    # Keys come as a set: the environment's session token does not join the file's keys.
    assert (s.access_key_id, s.secret_access_key, s.session_token) == ("file-id", "file-secret", None)
    assert not s.uses_path_style and s.presign


@pytest.mark.parametrize(("storage", "problem"), [
    ("{endpoint_url: 'minio:9000'}", "storage.endpoint_url"),
    ("{endpoint_url: 'ftp://minio:9000'}", "storage.endpoint_url"),
    ("{access_key_id: only-the-id}", "secret_access_key"),
    ("{presign: maybe}", "storage.presign"),
])
def test_bad_s3_settings_are_refused_by_name(tmp_path: Path, storage: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(write(tmp_path, f"storage_url: s3://bucket/x\nstorage: {storage}\n"), env={})


def test_a_bad_s3_url_stops_serve_with_a_message(tmp_path: Path) -> None:
    path = write(tmp_path, f"storage_url: s3://Bad_Bucket/x\ndatabase_url: sqlite+aiosqlite:///{tmp_path}/db\n")
    out = subprocess.run([sys.executable, "-m", "imagegate", "--config", path, "serve", "--port", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    assert out.returncode == 2, out.stderr
    assert "storage_url" in out.stderr and "Traceback" not in out.stderr

