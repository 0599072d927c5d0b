"""Shared fixtures: gateways started as real processes (see ``harness.py``), and an OpenAI
emulator per test module (``emu``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, start_gateway

StartGateway = Callable[..., GatewayProcess]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[StartGateway]:
    """``gateway_factory(config, **kw)`` starts a gateway for this test; all are stopped after."""
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any], *, name: str = "gw", **kw: Any) -> GatewayProcess:
        gw = start_gateway(tmp_path / f"{name}{len(started)}", config, **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="module")
def module_gateway_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartGateway]:
    """Like ``gateway_factory`` but shared by a test module (start once, reuse)."""
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any], *, name: str = "gw", **kw: Any) -> GatewayProcess:
        gw = start_gateway(tmp_path_factory.mktemp(name), config, **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="module")
def emu() -> Iterator[OpenAIEmulator]:
    """An OpenAI-compatible upstream for this test module (``emu.reset()`` between tests where
    they script failures)."""
    with OpenAIEmulator() as e:
        yield e
