"""Configuration: where it comes from, ${VAR} interpolation, refusals that name the key, and the
channels enabled from the environment when there is no file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from imagegate.config import ConfigError, load_settings
from imagegate.routing import default_channels
from tests.harness import free_port


def write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "imagegate.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, env={})
    assert s.database_url.startswith("sqlite+aiosqlite:///") and s.storage_url.startswith("file://")
    assert s.channels is None and s.local_model and s.outbound_allowlist == []


def test_file_from_environment_variable_and_interpolation(tmp_path: Path) -> None:
    path = write(tmp_path, {"public_url": "https://${HOST}/", "channels": [
        {"name": "a", "provider": "openai", "api_key": "${OPENAI_KEY}", "base_url": "${BASE:-https://x/v1}"}]})
    s = load_settings(None, env={"IMAGEGATE_CONFIG": path, "HOST": "img.example", "OPENAI_KEY": "sk-1"})
    assert s.public_url == "https://img.example"  # trailing slash removed
    assert s.channels is not None
    assert (s.channels[0].api_key, s.channels[0].base_url) == ("sk-1", "https://x/v1")


def test_missing_variable_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, {"channels": [{"name": "a", "provider": "openai", "api_key": "${NOPE}"}]})
    with pytest.raises(ConfigError, match="NOPE"):
        load_settings(path, env={})


@pytest.mark.parametrize(("data", "named"), [
    ({"pubic_url": "http://x"}, "pubic_url"),
    ({"channels": [{"name": "a", "provider": "openai", "weight": 0}]}, "channels.0.weight"),
    ({"channels": [{"name": "a", "provider": "openai", "modles": {}}]}, "channels.0.modles"),
    ({"limits": {"max_file_bytes": -1}}, "limits.max_file_bytes"),
    ({"prices": {"gpt-image-1": {"per_image": "lots"}}}, "prices.gpt-image-1.per_image"),
    ({"tasks": {"workers": "many"}}, "tasks.workers"),
])
def test_bad_keys_and_values_are_refused_by_name(tmp_path: Path, data: object, named: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, data), env={})
    assert named in str(exc.value)


def test_price_shorthand(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, {"prices": {"m": 0.04}}), env={})
    assert str(s.prices["m"].per_image) == "0.04"


def test_channels_from_environment_keys() -> None:
    s = load_settings(None, env={"IMAGEGATE_CONFIG": ""})
    channels = default_channels(s, {"OPENAI_API_KEY": "sk-a", "GEMINI_API_KEY": "g-b"})
    by_provider = {c.provider: c for c in channels}
    assert set(by_provider) == {"openai", "gemini", "local"}
    assert by_provider["openai"].api_key == "sk-a" and by_provider["gemini"].api_key == "g-b"


def test_local_model_can_be_turned_off() -> None:
    from imagegate.config import Settings

    assert default_channels(Settings(local_model=False), {}) == []


def serve(tmp_path: Path, data: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagegate", "--config", write(tmp_path, data), "serve",
                           "--port", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("data", "named"), [
    ({"channels": [{"name": "a", "provider": "openai", "bogus": 1}]}, "channels.0.bogus"),
    ({"channels": [{"name": "a", "provider": "no-such-provider"}]}, "channels.0.provider"),
    ({"channels": [{"name": "r", "provider": "replicate", "options": {"wait": 99}}]}, "options.wait"),
    ({"channels": [{"name": "g", "provider": "gemini", "options": {"typo": True}}]}, "options.typo"),
])
def test_serve_refuses_bad_configuration_at_start_up(tmp_path: Path, data: object, named: str) -> None:
    out = serve(tmp_path, data)
    assert out.returncode == 2, out.stderr
    assert named in out.stderr and "Traceback" not in out.stderr


def test_public_url_follows_the_served_port_unless_configured(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path, {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
                            "storage_url": f"file://{tmp_path / 'img'}"})
    proc = subprocess.Popen([sys.executable, "-m", "imagegate", "--config", path, "serve", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        key = subprocess.run([sys.executable, "-m", "imagegate", "--config", path, "keys", "create", "--name", "k"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[-1]
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/images/generations", method="POST",
            data=b'{"model": "imagegate-shapes", "prompt": "a red circle", "size": "64x64"}',
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        url = json.loads(urllib.request.urlopen(req, timeout=30).read())["data"][0]["url"]
        assert url.startswith(f"http://127.0.0.1:{port}/files/")
    finally:
        proc.terminate()
        proc.wait(10)
