from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from imagegate.api.files import router
from imagegate.storage import LocalBlobStore, UrlSigner


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, fmt)
    return buf.getvalue()


@dataclass
class Env:
    client: TestClient
    store: LocalBlobStore
    signer: UrlSigner
    key: str
    data: bytes

    def url(self, key: str, *, ttl: int = 3600) -> str:
        parts = urlsplit(self.store.url_for(key, ttl=ttl))
        return f"{parts.path}?{parts.query}"

    def signed(self, key: str, expires: int) -> str:
        return f"/files/{key}?expires={expires}&sig={self.signer.sign(key, expires)}"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    signer = UrlSigner(b"files-secret")
    store = LocalBlobStore(tmp_path / "blobs", "http://testserver", signer)
    (tmp_path / "secret.txt").write_text("outside the store root")
    data = bytes(range(256)) * 40  # 10240 bytes
    key = asyncio.run(store.put(data, content_type="image/png"))
    app = FastAPI()
    app.include_router(router)
    app.state.store = store
    app.state.urls = store.urls
    return Env(TestClient(app), store, signer, key, data)


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and err["type"] == "invalid_request_error"
    assert err["param"] is None and err["code"] == code


def test_serves_signed_url(env: Env) -> None:
    resp = env.client.get(env.url(env.key, ttl=600))
    assert resp.status_code == 200
    assert resp.content == env.data
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["content-length"] == str(len(env.data))
    cache = resp.headers["cache-control"]
    assert cache.startswith("private, max-age=")
    assert 595 <= int(cache.rpartition("=")[2]) <= 600


def test_head(env: Env) -> None:
    resp = env.client.head(env.url(env.key))
    assert resp.status_code == 200
    assert resp.content == b""
    assert resp.headers["content-length"] == str(len(env.data))


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_content_types(env: Env, fmt: str, content_type: str) -> None:
    data = image_bytes(fmt)
    key = asyncio.run(env.store.put(data, content_type=content_type))
    resp = env.client.get(env.url(key))
    assert resp.status_code == 200 and resp.content == data
    assert resp.headers["content-type"] == content_type


def test_bad_signature(env: Env) -> None:
    url = env.url(env.key)
    assert_error(env.client.get(url[:-2] + ("AA" if not url.endswith("AA") else "BB")), 403, "invalid_signature")
    assert_error(env.client.get(f"/files/{env.key}"), 403, "invalid_signature")
    assert_error(env.client.get(f"/files/{env.key}?expires=abc&sig=x"), 403, "invalid_signature")
    assert_error(env.client.get(f"/files/{env.key}?expires=99999999999"), 403, "invalid_signature")
    assert env.client.head(f"/files/{env.key}?expires=99999999999&sig=x").status_code == 403


def test_expired(env: Env) -> None:
    assert_error(env.client.get(env.signed(env.key, int(time.time()) - 1)), 403, "url_expired")


def test_expiry_cannot_be_extended(env: Env) -> None:
    url = env.url(env.key, ttl=10)
    expires = int(url.split("expires=")[1].split("&")[0])
    assert_error(
        env.client.get(url.replace(f"expires={expires}", f"expires={expires + 3600}")), 403, "invalid_signature"
    )


def test_valid_signature_for_another_key(env: Env) -> None:
    other = asyncio.run(env.store.put(b"other", content_type="image/png"))
    query = env.url(other).split("?", 1)[1]
    assert_error(env.client.get(f"/files/{env.key}?{query}"), 403, "invalid_signature")


def test_missing_blob(env: Env) -> None:
    url = env.url(env.key)
    asyncio.run(env.store.delete(env.key))
    assert_error(env.client.get(url), 404, "not_found")


def test_range_first_bytes(env: Env) -> None:
    resp = env.client.get(env.url(env.key), headers={"Range": "bytes=0-9"})
    assert resp.status_code == 206
    assert resp.content == env.data[:10]
    assert resp.headers["content-range"] == f"bytes 0-9/{len(env.data)}"
    assert resp.headers["content-length"] == "10"


def test_range_suffix(env: Env) -> None:
    resp = env.client.get(env.url(env.key), headers={"Range": "bytes=-5"})
    assert resp.status_code == 206
    assert resp.content == env.data[-5:]
    n = len(env.data)
    assert resp.headers["content-range"] == f"bytes {n - 5}-{n - 1}/{n}"


def test_range_open_ended(env: Env) -> None:
    resp = env.client.get(env.url(env.key), headers={"Range": "bytes=10000-"})
    assert resp.status_code == 206
    assert resp.content == env.data[10000:]


def test_range_unsatisfiable(env: Env) -> None:
    resp = env.client.get(env.url(env.key), headers={"Range": f"bytes={len(env.data)}-"})
    assert resp.status_code == 416
    assert resp.headers["content-range"] == f"bytes */{len(env.data)}"


@pytest.mark.parametrize(
    "path",
    [
        "/files/../../etc/passwd",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/..%2f..%2fetc%2fpasswd",
        "/files/%2e%2e%2fsecret.txt",
        "/files/img/2026/11/24/..%2f..%2f..%2f..%2f..%2fsecret.txt",
        "/files/%2Fetc%2Fpasswd",
    ],
)
def test_traversal_without_signature(env: Env, path: str) -> None:
    resp = env.client.get(f"{path}?expires=99999999999&sig=AAAA")
    assert resp.status_code in (403, 404)
    assert b"outside the store root" not in resp.content and b"root:" not in resp.content


@pytest.mark.parametrize(
    "key", ["../secret.txt", "../../etc/passwd", "/etc/passwd", "img/../../secret.txt", "img/2026/11/24"]
)
def test_traversal_even_with_a_valid_signature(env: Env, key: str) -> None:
    # Were the signing secret ever to sign such a key, the store still refuses to map it to a path.
    expires = int(time.time()) + 60
    # Percent-encoded, or the HTTP client would resolve the dot segments before sending.
    resp = env.client.get(f"/files/{quote(key, safe='')}?expires={expires}&sig={env.signer.sign(key, expires)}")
    assert_error(resp, 404, "not_found")
