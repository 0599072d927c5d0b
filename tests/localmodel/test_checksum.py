"""The engine refuses weights whose SHA-256 does not match SHA256SUMS."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imagegate.localmodel import ShapesEngine, WeightsError
from imagegate.localmodel.engine import DEFAULT_WEIGHTS_DIR, ONNX_NAME, SUMS_NAME


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "weights"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, dst)
    return dst


def test_intact_copy_loads(tmp_path: Path) -> None:
    eng = ShapesEngine.load(_copy(tmp_path))
    assert eng.native_size >= 32
    eng._executor.shutdown()


def test_corrupted_weights_refused(tmp_path: Path) -> None:
    wd = _copy(tmp_path)
    data = bytearray((wd / ONNX_NAME).read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte in the middle of the tensors
    (wd / ONNX_NAME).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        ShapesEngine.load(wd)


def test_missing_checksums_refused(tmp_path: Path) -> None:
    wd = _copy(tmp_path)
    (wd / SUMS_NAME).unlink()
    with pytest.raises(WeightsError, match="missing"):
        ShapesEngine.load(wd)


def test_shipped_weights_within_budget() -> None:
    assert (DEFAULT_WEIGHTS_DIR / ONNX_NAME).stat().st_size <= 15 * 1024 * 1024
