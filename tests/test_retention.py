"""Image retention (``storage.retention_days``): a real gateway process sweeps stored images once
they are older than the retention, but never the images of a task that is still kept."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
from openai import OpenAI
from PIL import Image

from imagegate.config import ConfigError, load_settings
from imagegate.storage import LocalBlobStore, UrlSigner, new_key
from tests.conftest import StartGateway
from tests.harness import GatewayProcess
from tests.tasks.conftest import auth, get_task, submit, wait_task

MODEL = "imagegate-shapes"
RETENTION_DAYS = 0.00002  # ≈ 1.7 s
SWEEP_INTERVAL = 0.3


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({"storage": {"retention_days": RETENTION_DAYS, "sweep_interval": SWEEP_INTERVAL}})


@pytest.fixture(scope="module")
def key(gw: GatewayProcess) -> str:
    return gw.key()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess, key: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as c:
        yield c


def stored_file(gw: GatewayProcess, url: str) -> Path:
    key = urlsplit(url).path.removeprefix("/files/")
    return gw.root / "images" / key


def wait_status(url: str, status: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(url).status_code == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout} s")


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buf, "PNG")
    return buf.getvalue()


def test_an_image_older_than_the_retention_is_swept(client: OpenAI, gw: GatewayProcess) -> None:
    url = client.images.generate(model=MODEL, prompt="a red circle", size="256x256").data[0].url or ""
    path = stored_file(gw, url)
    assert httpx.get(url).status_code == 200
    assert path.is_file()
    wait_status(url, 404)
    assert not path.exists()
    assert httpx.get(url).json()["error"]["code"] == "not_found"


def test_a_kept_task_keeps_its_results_and_uploads(client: OpenAI, gw: GatewayProcess, key: str) -> None:
    task_id = submit(gw, key, {"model": MODEL, "prompt": "a blue square", "size": "256x256"})
    r = httpx.post(gw.url + "/v1/images/edits", params={"async": "true"}, headers=auth(key),
                   data={"model": MODEL, "prompt": "make it red", "size": "256x256"},
                   files={"image": ("in.png", png(), "image/png")}, timeout=30)
    assert r.status_code == 200, r.text
    edit_id = r.json()["task_id"]
    results = [wait_task(gw, key, t)["data"]["data"][0]["url"] for t in (task_id, edit_id)]
    uploads = list((gw.root / "images" / "task-in").rglob("*.png"))
    assert uploads
    # A sync image made now is swept, which shows the sweeper ran past the tasks' images.
    sync_url = client.images.generate(model=MODEL, prompt="a green circle", size="256x256").data[0].url or ""
    wait_status(sync_url, 404)
    time.sleep(3 * SWEEP_INTERVAL)
    for t, url in zip((task_id, edit_id), results, strict=True):
        assert stored_file(gw, url).is_file()
        fresh = get_task(gw, key, t).json()["data"]["data"]["data"][0]["url"]
        assert httpx.get(fresh).status_code == 200
    assert all(p.is_file() for p in uploads)


@pytest.mark.parametrize(("value", "kept_forever"), [(0, True), (None, True), (30, False)])
def test_retention_zero_or_null_keeps_images_forever(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     value: float | None, kept_forever: bool) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "retention.yaml"
    path.write_text(f"storage: {{retention_days: {'null' if value is None else value}}}\n")
    storage = load_settings(str(path), env={}).storage
    assert storage.keeps_forever is kept_forever
    assert load_settings(None, env={}).storage.retention_days == 30


def test_a_negative_retention_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "imagegate.yaml"
    path.write_text("storage: {retention_days: -1}\n")
    with pytest.raises(ConfigError, match=r"storage\.retention_days"):
        load_settings(str(path), env={})


async def test_the_local_store_lists_old_files_and_prunes_past_days(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", "http://gw.example", UrlSigner(b"s"))
    now = time.time()
    old_day = datetime.fromtimestamp(now - 40 * 86400, UTC)
    old = [new_key("image/png", now=old_day), new_key("image/png", prefix="task-in", now=old_day)]
    fresh_key = await store.put(b"fresh", content_type="image/png")
    aged_today = await store.put(b"aged", content_type="image/png")
    for key in old:
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"old")
        os.utime(path, (now - 40 * 86400, now - 40 * 86400))
    os.utime(store.root / aged_today, (now - 100, now - 100))
    leftover = (store.root / old[0]).parent / ".tmp-crashed.part"
    leftover.write_bytes(b"partial")
    os.utime(leftover, (now - 40 * 86400, now - 40 * 86400))

    found = [key async for batch in store.keys_older_than(now - 30 * 86400) for key in batch]
    assert sorted(found) == sorted(old) and not leftover.exists()
    recent = [key async for batch in store.keys_older_than(now - 50) for key in batch]
    assert sorted(recent) == sorted([*old, aged_today])  # oldest days first; fresh_key is too young

    for key in old:
        await store.delete(key)
    assert [key async for batch in store.keys_older_than(now - 30 * 86400) for key in batch] == []
    assert not (store.root / old[0]).parent.exists(), "an emptied past day's directory is removed"
    assert (store.root / fresh_key).is_file() and (store.root / aged_today).is_file()
