"""The command line for people (``imagegate generate | edit | models | task watch``), run as a person
runs it — a subprocess — against a real gateway serving the embedded model."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import StartGateway
from tests.harness import GatewayProcess


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({})


@pytest.fixture(scope="module")
def key(gw: GatewayProcess) -> str:
    return gw.key()


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def imagegate(tmp_path: Path, gw: GatewayProcess, key: str | None, *args: str,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    conn = ["--base-url", gw.url] + (["--api-key", key] if key else [])
    return subprocess.run([sys.executable, "-m", "imagegate", *args, *conn], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**base, **(env or {})})


def test_generate_saves_the_images_and_prints_their_paths(tmp_path: Path, gw: GatewayProcess, key: str) -> None:
    r = imagegate(tmp_path, gw, key, "generate", "a red circle", "-m", "imagegate-shapes", "--aspect-ratio", "16:9",
                  "-n", "2", "-o", "out", "--seed", "5")
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    assert len(paths) == 2 and all(p.startswith("out/") and p.endswith(".png") for p in paths)
    sizes = {size_of(tmp_path / p) for p in paths}
    assert len(sizes) == 1 and (w := next(iter(sizes)))[0] > w[1]  # 16:9, landscape
    assert "Traceback" not in r.stderr


def test_generate_json_output(tmp_path: Path, gw: GatewayProcess, key: str) -> None:
    r = imagegate(tmp_path, gw, key, "generate", "a blue square", "--size", "128x128", "--partials", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["partial_images"] == 2 and out["request_id"]
    assert [set(i) for i in out["images"]] == [{"path", "size"}] and out["images"][0]["size"] == "128x128"
    assert size_of(tmp_path / out["images"][0]["path"]) == (128, 128)
    assert out["dropped_params"] == []


def test_a_bad_parameter_is_the_apis_message_and_exit_1(tmp_path: Path, gw: GatewayProcess, key: str) -> None:
    r = imagegate(tmp_path, gw, key, "generate", "a fox", "--size", "10x10", "-o", "out")
    assert r.returncode == 1
    assert "imagegate: error: size '10x10' is too small" in r.stderr and "(param: size)" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()
    r = imagegate(tmp_path, gw, key, "generate", "a fox", "-m", "no-such-model", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["status"] == 404


def test_wrong_key_and_unreachable_gateway(tmp_path: Path, gw: GatewayProcess) -> None:
    r = imagegate(tmp_path, gw, "sk-wrong", "models")
    assert r.returncode == 1 and "API key" in r.stderr
    r = subprocess.run([sys.executable, "-m", "imagegate", "models", "--base-url", "http://127.0.0.1:9",
                        "--api-key", "x"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "cannot reach http://127.0.0.1:9" in r.stderr


def test_key_from_the_environment_and_models(tmp_path: Path, gw: GatewayProcess, key: str) -> None:
    r = imagegate(tmp_path, gw, None, "models", env={"IMAGEGATE_API_KEY": key})
    assert r.returncode == 0, r.stderr
    assert "imagegate-shapes" in r.stdout.split()


def test_key_from_the_quick_starts_file(tmp_path: Path, gw: GatewayProcess, key: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "first-key.txt").write_text(key + "\n")
    r = imagegate(tmp_path, gw, None, "models", "--json")
    assert r.returncode == 0, r.stderr
    assert "imagegate-shapes" in [m["id"] for m in json.loads(r.stdout)["models"]]


def test_edit_with_a_mask(tmp_path: Path, gw: GatewayProcess, key: str) -> None:
    photo = np.zeros((96, 96, 3), np.uint8)
    photo[:] = (20, 180, 40)
    mask = np.full((96, 96, 4), 255, np.uint8)
    mask[24:72, 24:72, 3] = 0
    for name, arr, mode in (("photo.png", photo, "RGB"), ("mask.png", mask, "RGBA")):
        buf = io.BytesIO()
        Image.fromarray(arr, mode).save(buf, format="PNG")
        (tmp_path / name).write_bytes(buf.getvalue())
    r = imagegate(tmp_path, gw, key, "edit", "photo.png", "--mask", "mask.png", "put a yellow star in the middle",
                  "-o", "edited")
    assert r.returncode == 0, r.stderr
    (path,) = r.stdout.split()
    with Image.open(tmp_path / path) as img:
        out = np.asarray(img.convert("RGB"))
    assert out.shape == (96, 96, 3) and (out[:8, :8] == (20, 180, 40)).all()


def test_async_generate_then_watch(tmp_path: Path, gw: GatewayProcess, key: str) -> None:
    r = imagegate(tmp_path, gw, key, "generate", "a green triangle", "--size", "128x128", "--async", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["task_id"]) == 32 and len(out["images"]) == 1
    assert size_of(tmp_path / out["images"][0]["path"]) == (128, 128)
    # ``task watch`` on the finished task saves its images again.
    r = imagegate(tmp_path, gw, key, "task", "watch", out["task_id"], "-o", "again")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].startswith("again/")
    r = imagegate(tmp_path, gw, key, "task", "watch", "0" * 32)
    assert r.returncode == 1 and "No task" in r.stderr


def test_progress_lines_and_ctrl_c_cancels(tmp_path: Path, module_gateway_factory: StartGateway) -> None:
    from tests.emulators.openai import OpenAIEmulator
    from tests.harness import channel

    with OpenAIEmulator() as emu:
        gw = module_gateway_factory({"channels": [channel("c1", "openai", emu.url + "/v1",
                                                          {"gpt-image-1": "gpt-image-1"})], "local_model": False})
        key = gw.key()
        emu.stream_delay = 0.3
        r = imagegate(tmp_path, gw, key, "generate", "a fox", "-m", "gpt-image-1", "--partials", "2", "-o", "out")
        assert r.returncode == 0, r.stderr
        # Piped: plain progress lines on stderr, the partial images counted as they stream.
        assert "partial image 1" in r.stderr and "partial image 2" in r.stderr and "image 1 of 1" in r.stderr
        assert len(r.stdout.split()) == 1
        emu.stream_delay = 5.0
        base = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
        proc = subprocess.Popen([sys.executable, "-m", "imagegate", "generate", "a fox", "-m", "gpt-image-1",
                                 "--partials", "2", "--base-url", gw.url, "--api-key", key], cwd=tmp_path,
                                env=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        assert "generate ..." in proc.stderr.readline()
        time.sleep(2.5)  # the stream has started (past the gateway's early window)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "cancelled" in err and "Traceback" not in err
        assert out == ""
