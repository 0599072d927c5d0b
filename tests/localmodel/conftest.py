"""Shared fixtures: one engine over the shipped weights for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imagegate.localmodel import ShapesEngine


@pytest.fixture(scope="session")
def engine() -> Iterator[ShapesEngine]:
    # Loading verifies the committed weights' SHA-256, so every test also
    # exercises the checksum path on the real files.
    eng = ShapesEngine.load(max_batch=64)
    yield eng
    eng._executor.shutdown(wait=True)
