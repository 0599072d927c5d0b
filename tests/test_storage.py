from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs, urlsplit

import pytest

from imagegate.storage import LocalBlobStore, UrlSigner, content_type_of, is_valid_key, new_key, open_store

SECRET = b"test-secret"


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", "https://gw.example/", UrlSigner(SECRET))


async def test_put_get_delete(store: LocalBlobStore) -> None:
    key = await store.put(b"\x89PNG fake", content_type="image/png")
    assert await store.get(key) == b"\x89PNG fake"
    assert store.local_path(key) == store.root / key
    await store.delete(key)
    with pytest.raises(KeyError):
        await store.get(key)
    await store.delete(key)  # idempotent


async def test_key_format(store: LocalBlobStore) -> None:
    key = await store.put(b"x", content_type="image/webp", prefix="upload")
    today = datetime.now(UTC).strftime("%Y/%m/%d")
    assert re.fullmatch(rf"upload/{today}/[0-9a-f]{{32}}\.webp", key)
    assert is_valid_key(key)


@pytest.mark.parametrize(
    ("content_type", "ext", "served_as"),
    [
        ("image/png", "png", "image/png"),
        ("image/jpeg", "jpg", "image/jpeg"),
        ("image/webp", "webp", "image/webp"),
        ("IMAGE/PNG; x=y", "png", "image/png"),
        ("text/html", "bin", "application/octet-stream"),
    ],
)
def test_extension_from_content_type(content_type: str, ext: str, served_as: str) -> None:
    key = new_key(content_type, now=datetime(2026, 11, 24, tzinfo=UTC))
    assert key.startswith("img/2026/11/24/") and key.endswith(f".{ext}")
    assert is_valid_key(key)
    assert content_type_of(key) == served_as


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "img/2026/11/24/../../../../etc/passwd",
        "/etc/passwd",
        "img/2026/11/24/" + "a" * 32 + ".png/..",
        "img/2026/11/24/" + "A" * 32 + ".png",
        "img/2026/11/24/" + "a" * 32 + ".exe",
        "img//2026/11/24/" + "a" * 32 + ".png",
        "",
    ],
)
async def test_invalid_keys(store: LocalBlobStore, key: str) -> None:
    assert not is_valid_key(key)
    assert store.local_path(key) is None
    with pytest.raises(KeyError):
        await store.get(key)
    with pytest.raises(ValueError):
        await store.delete(key)
    with pytest.raises(ValueError):
        store.url_for(key)


def test_invalid_prefix() -> None:
    with pytest.raises(ValueError):
        new_key("image/png", prefix="../x")


async def test_atomic_write_leaves_no_temp_files(store: LocalBlobStore) -> None:
    keys = [await store.put(bytes([i]) * 1000, content_type="image/png") for i in range(5)]
    files = sorted(p for p in store.root.rglob("*") if p.is_file())
    assert files == sorted(store.root / k for k in keys)


async def test_failed_write_leaves_nothing(store: LocalBlobStore) -> None:
    with pytest.raises(TypeError):
        await store.put(cast(bytes, "not bytes"), content_type="image/png")
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_url_for_is_signed_and_expiring(store: LocalBlobStore) -> None:
    key = new_key("image/png")
    before = int(time.time())
    url = urlsplit(store.url_for(key, ttl=600))
    assert (url.scheme, url.netloc, url.path) == ("https", "gw.example", f"/files/{key}")
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    expires = int(query["expires"])
    assert before + 600 <= expires <= int(time.time()) + 600
    assert store.urls.signer.verify(key, expires, query["sig"])


def test_signer() -> None:
    signer = UrlSigner(SECRET)
    key = "img/2026/11/24/" + "a" * 32 + ".png"
    sig = signer.sign(key, 1_000)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sig)  # 32 bytes, URL-safe, no padding
    assert signer.verify(key, 1_000, sig, now=999)
    assert signer.verify(key, 1_000, sig, now=1_000)
    assert not signer.verify(key, 1_000, sig, now=1_001)  # expired
    assert not signer.verify(key, 1_001, sig, now=999)  # expiry tampered with
    assert not signer.verify(key.replace("a", "b"), 1_000, sig, now=999)  # another key
    assert not signer.verify(key, 1_000, sig[:-1] + ("A" if sig[-1] != "A" else "B"), now=999)
    assert not signer.verify(key, 1_000, "ü" * 43, now=999)
    assert not UrlSigner(b"other").verify(key, 1_000, sig, now=999)
    with pytest.raises(ValueError):
        UrlSigner(b"")


def test_open_store_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("file://./data/images", public_url="http://127.0.0.1:8000", secret=SECRET)
    assert isinstance(store, LocalBlobStore)
    assert store.root == tmp_path / "data" / "images"
    assert store.root.is_dir()  # created at once: a bad path fails at start-up


def test_open_store_absolute(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/images", public_url="http://x", secret=SECRET)
    assert isinstance(store, LocalBlobStore) and store.root == tmp_path / "images"


@pytest.mark.parametrize("url", ["s3://", "s3://Not_A_Bucket/x", "s3://bucket/../x", "gs://bucket/prefix",
                                 "./data/images", "file://", "http://example.com/x"])
def test_open_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="storage_url"):
        open_store(url, public_url="http://x", secret=SECRET)
