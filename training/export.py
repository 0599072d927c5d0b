"""Export a training checkpoint (EMA weights) to ONNX for the pure-numpy serving path.

    python training/export.py --ckpt training/out/final/ckpt.pt --out src/imagegate/localmodel/weights

Writes ``shapes.onnx``, ``model.json`` (config + vocabulary the weights were
trained with) and ``SHA256SUMS`` (verified by the engine at load), then checks
that onnxruntime reproduces the torch output on random inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model import ModelConfig, ShapesDenoiser

from imagegate.localmodel.vocab import NUM_SLOTS, VOCAB

ONNX_NAME = "shapes.onnx"
META_NAME = "model.json"


def load_checkpoint(path: Path) -> tuple[ShapesDenoiser, dict[str, object]]:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    meta: dict[str, object] = ck["meta"]
    cfg = ModelConfig.from_dict(meta["config"])  # type: ignore[arg-type]
    model = ShapesDenoiser(cfg)
    model.load_state_dict(ck["ema"])
    model.eval()
    return model, meta


def export(model: ShapesDenoiser, out: Path, meta: dict[str, object] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    s = model.cfg.image_size
    x = torch.randn(2, 3, s, s)
    t = torch.tensor([0.3, 0.9])
    tok = torch.zeros(2, NUM_SLOTS, dtype=torch.int64)
    onnx_path = out / ONNX_NAME
    # The TorchScript exporter (dynamo=False) is used on purpose: it needs only the
    # `onnx` package (not onnxscript) and yields a plain opset-17 graph. Torch
    # flags it (and helpers it uses internally) as deprecated; those notices are
    # expected, so deprecation warnings are silenced for this one call only. The
    # tracer also warns about group norm's shape sanity check (a Python bool of a
    # shape product); it is shape-only, and the parity check below proves the
    # traced graph right.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (x, t, tok),
            str(onnx_path),
            input_names=["x", "t", "tokens"],
            output_names=["v"],
            dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "tokens": {0: "batch"}, "v": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    info = {
        "format": 1,
        "image_size": s,
        "vocab": list(VOCAB),
        "config": model.cfg.to_dict(),
        "objective": "rectified-flow velocity v = noise - image, x_t = (1-t) image + t noise",
        "training": meta or {},
    }
    (out / META_NAME).write_text(json.dumps(info, indent=2) + "\n")
    sums = []
    for name in (ONNX_NAME, META_NAME):
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        sums.append(f"{digest}  {name}\n")
    (out / "SHA256SUMS").write_text("".join(sums))
    return onnx_path


def max_abs_diff(model: ShapesDenoiser, onnx_path: Path, batch: int = 4, seed: int = 0) -> float:
    """Largest |torch - onnxruntime| over random inputs (a parity check of the export)."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    s = model.cfg.image_size
    x = torch.randn(batch, 3, s, s, generator=g)
    t = torch.rand(batch, generator=g)
    tok = torch.randint(0, len(VOCAB), (batch, NUM_SLOTS), generator=g)
    with torch.no_grad():
        ref = model(x, t, tok).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy(), "t": t.numpy(), "tokens": tok.numpy()})[0]
    return float(np.max(np.abs(ref - got)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("src/imagegate/localmodel/weights"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, meta = load_checkpoint(args.ckpt)
    path = export(model, args.out, meta)
    diff = max_abs_diff(model, path)
    print(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB); max |torch - onnx| = {diff:.2e}")
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
