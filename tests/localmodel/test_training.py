"""Training smoke test and ONNX export parity (skipped where torch is absent)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

TRAINING = Path(__file__).resolve().parents[2] / "training"


@pytest.fixture(scope="module")
def training_modules():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(TRAINING))
    try:
        import export
        import train

        yield train, export
    finally:
        sys.path.remove(str(TRAINING))


def test_train_few_steps_then_export_matches_torch(training_modules, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, export = training_modules
    out = tmp_path / "run"
    assert train.main(["--tiny", "--steps", "3", "--batch", "8", "--out", str(out)]) == 0
    ckpt = out / "ckpt.pt"
    assert ckpt.is_file()
    model, meta = export.load_checkpoint(ckpt)
    assert meta["step"] == 3
    # Perturb the zero-initialised output layer so the parity check is not 0 == 0.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    wd = tmp_path / "weights"
    onnx_path = export.export(model, wd, meta)
    assert export.max_abs_diff(model, onnx_path) < 1e-4

    # The exported directory is a complete, loadable engine model.
    from imagegate.localmodel import LocalRequest, ShapesEngine

    eng = ShapesEngine.load(wd)
    img = eng.generate_sync(LocalRequest("a red circle", seed=0, steps=2))[0]
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    eng._executor.shutdown()
