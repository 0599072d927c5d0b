"""The README's examples run as written on a keyless install: every ``bash`` block that talks to
``$GW`` and every ``python`` block that makes a client, against a real gateway with only the
embedded model; and every configuration example starts a gateway (its ``${VAR}``s set).

A block fails the test when a command in it fails: ``curl`` runs with ``--fail-with-body`` and the
shell with ``set -euo pipefail``; a Python block fails on any exception.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from imagegate.config import load_settings
from tests.conftest import StartGateway
from tests.emulators.base import make_image
from tests.harness import GatewayProcess

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
ADMIN = "readme-admin-token"
BLOCKS = [(lang, body) for lang, body in BLOCK.findall(README)]


def runnable(lang: str, body: str) -> bool:
    if lang == "bash":
        return "$GW" in body or ("127.0.0.1:8000" in body and "curl" in body)
    return lang == "python" and ("OpenAI(" in body or "genai.Client(" in body)


EXAMPLES = [(i, lang, body) for i, (lang, body) in enumerate(BLOCKS) if runnable(lang, body)]
CONFIGS = [(i, body) for i, (lang, body) in enumerate(BLOCKS) if lang == "yaml"]


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway, tmp_path_factory: pytest.TempPathFactory) -> GatewayProcess:
    return module_gateway_factory({"local_model": True, "admin_token": ADMIN})


@pytest.fixture(scope="module")
def workdir(gw: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a user would stand: data/first-key.txt, and the files the examples upload."""
    root = tmp_path_factory.mktemp("readme")
    (root / "data").mkdir()
    (root / "data" / "first-key.txt").write_text(gw.key() + "\n")
    (root / "photo.png").write_bytes(make_image(256, 256, "png", seed=3))
    (root / "mask.png").write_bytes(make_image(256, 256, "png", seed=4, transparent=True))
    return root


def test_the_readme_has_examples_to_run() -> None:
    assert len(EXAMPLES) >= 10 and any(lang == "python" for _, lang, _ in EXAMPLES)


@pytest.mark.parametrize(("index", "lang", "body"), EXAMPLES, ids=[f"block{i}-{lang}" for i, lang, _ in EXAMPLES])
def test_example_runs(index: int, lang: str, body: str, gw: GatewayProcess, workdir: Path) -> None:
    body = body.replace("http://127.0.0.1:8000", gw.url)
    key = (workdir / "data" / "first-key.txt").read_text().strip()
    if lang == "bash":
        script = "set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n" + body
        env = {**os.environ, "GW": gw.url, "KEY": key, "IMAGEGATE_ADMIN_TOKEN": ADMIN}
        out = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, f"README block {index} failed:\n{body}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    else:
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            exec(compile(textwrap.dedent(body), f"README block {index}", "exec"), {"GW": gw.url, "KEY": key})
        finally:
            os.chdir(cwd)


@pytest.mark.parametrize(("index", "body"), CONFIGS, ids=[f"block{i}-yaml" for i, _ in CONFIGS])
def test_config_example_loads(index: int, body: str, tmp_path: Path) -> None:
    path = tmp_path / "imagegate.yaml"
    path.write_text(body)
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", body))
    settings = load_settings(str(path), env={name: "x" for name in names})
    assert settings is not None
