"""Train the embedded shapes model with rectified flow + caption dropout (CFG).

    python training/train.py --steps 2600 --threads 2 --seed 0 --out training/out/run1

Objective: rectified flow (Liu et al. 2022; SD3 uses the same). x_t = (1-t) x + t n,
the network predicts v = n - x and sampling integrates dx/dt = v from t=1 to 0.
Chosen over DDPM/eps-prediction because straight paths sample well in ~20 Euler
steps, which matters on a CPU, and because img2img/inpainting fall out directly
(start at t=strength from (1-t) x_init + t n).

Determinism: the data stream, noise and init all come from ``--seed``; ``--steps``
fixes the schedule. ``--minutes`` is only a safety cap (it stops early and says so).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dataset
from model import TINY, ModelConfig, ShapesDenoiser


def sample_t(g: torch.Generator, n: int) -> torch.Tensor:
    """Logit-normal t (SD3) mixed with uniform so both ends of [0, 1] are still trained."""
    ln = torch.sigmoid(torch.randn(n, generator=g))
    un = torch.rand(n, generator=g)
    pick = torch.rand(n, generator=g) < 0.7
    return torch.where(pick, ln, un).clamp(1e-4, 1 - 1e-4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2600)
    ap.add_argument("--minutes", type=float, default=45.0, help="hard wall-clock cap")
    ap.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop after this many steps while keeping the --steps LR schedule "
        "(reproduces a run that the wall-clock cap stopped early)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=Path("training/out/run"))
    ap.add_argument("--tiny", action="store_true", help="tiny config for smoke tests")
    ap.add_argument("--ckpt-every", type=float, default=5.0, help="minutes between checkpoints")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    cfg = TINY if args.tiny else ModelConfig()
    model = ShapesDenoiser(cfg)
    ema = ShapesDenoiser(cfg)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warm = max(1, min(200, args.steps // 10))

    def lr_at(step: int) -> float:
        if step < warm:
            return args.lr * (step + 1) / warm
        p = (step - warm) / max(1, args.steps - warm)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    args.out.mkdir(parents=True, exist_ok=True)
    print(f"params={nparams} cfg={cfg} threads={args.threads} steps={args.steps}", flush=True)
    t0 = time.time()
    c0 = time.process_time()
    last_ckpt = t0
    ema_loss = None
    step = 0
    stopped_early = False

    def save(tag: str) -> None:
        meta = {
            "config": cfg.to_dict(),
            "step": step,
            "wall_s": time.time() - t0,
            "cpu_s": time.process_time() - c0,
            "threads": args.threads,
            "seed": args.seed,
            "batch": args.batch,
            "params": nparams,
            "stopped_early": stopped_early,
        }
        torch.save({"meta": meta, "model": model.state_dict(), "ema": ema.state_dict()}, args.out / tag)
        (args.out / "meta.json").write_text(json.dumps(meta, indent=2))

    for step in range(args.steps):
        if args.stop_at is not None and step >= args.stop_at:
            stopped_early = True
            break
        if time.time() - t0 > args.minutes * 60:
            stopped_early = True
            print(f"time cap hit at step {step}", flush=True)
            break
        x_np, tok_np = dataset.batch(rng, args.batch, cfg.image_size)
        x = torch.from_numpy(x_np)
        tok = torch.from_numpy(tok_np)
        t = sample_t(g, args.batch)
        noise = torch.randn(x.shape, generator=g)
        tt = t[:, None, None, None]
        xt = (1 - tt) * x + tt * noise
        loss = torch.mean((model(xt, t, tok) - (noise - x)) ** 2)
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        # EMA with warm-up so short runs are not dominated by the random init.
        d = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        li = float(loss.detach())
        ema_loss = li if ema_loss is None else 0.98 * ema_loss + 0.02 * li
        if step % 50 == 0 or step == args.steps - 1:
            el = time.time() - t0
            print(f"step {step} loss {li:.4f} avg {ema_loss:.4f} lr {lr_at(step):.2e} {el:.0f}s", flush=True)
        if time.time() - last_ckpt > args.ckpt_every * 60:
            save("ckpt.pt")
            last_ckpt = time.time()
    else:
        step = args.steps
    save("ckpt.pt")
    print(f"done steps={step} wall={time.time() - t0:.1f}s cpu={time.process_time() - c0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
