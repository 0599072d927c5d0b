"""Slot text encoder + small conditional UNet (velocity predictor for rectified flow).

Kept export-friendly: only convs, group norm, linear layers and hand-written
attention (no fused ``nn.MultiheadAttention`` fast paths), so the ONNX graph is
plain and onnxruntime matches torch closely.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imagegate.localmodel.vocab import NUM_SLOTS, VOCAB


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 32
    base: int = 32
    mults: tuple[int, ...] = (1, 2, 4)
    # Cross-attention to the caption slots at these resolutions (cheap: 9 keys).
    attn_res: tuple[int, ...] = (16, 8)
    # Pixel self-attention only where it is affordable on a CPU (few tokens).
    self_attn_res: tuple[int, ...] = (8,)
    text_dim: int = 128
    text_layers: int = 2
    heads: int = 4

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ModelConfig:
        kw = dict(d)
        for k in ("mults", "attn_res", "self_attn_res"):
            kw[k] = tuple(kw[k])  # type: ignore[arg-type]
        return cls(**kw)  # type: ignore[arg-type]


TINY = ModelConfig(base=16, mults=(1, 2), attn_res=(16,), self_attn_res=(16,), text_dim=32, text_layers=1, heads=2)


class Attention(nn.Module):
    def __init__(self, dim: int, ctx_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(ctx_dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.heads
        q = self.q(x).reshape(b, n, h, c // h).transpose(1, 2)
        k, v = self.kv(ctx).chunk(2, dim=-1)
        k = k.reshape(b, -1, h, c // h).transpose(1, 2)
        v = v.reshape(b, -1, h, c // h).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) * (c // h) ** -0.5, dim=-1)
        o = (w @ v).transpose(1, 2).reshape(b, n, c)
        return self.out(o)


class TextEncoder(nn.Module):
    """Word embedding (shared vocabulary) + slot-role embedding + small transformer."""

    def __init__(self, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.word = nn.Embedding(len(VOCAB), dim)
        self.role = nn.Parameter(torch.randn(NUM_SLOTS, dim) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "n1": nn.LayerNorm(dim),
                        "attn": Attention(dim, dim, heads),
                        "n2": nn.LayerNorm(dim),
                        "ff": nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)),
                    }
                )
            )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.word(tokens) + self.role
        for blk in self.blocks:
            h = blk["n1"](x)
            x = x + blk["attn"](h, h)
            x = x + blk["ff"](blk["n2"](x))
        x = self.norm(x)
        return x, x.mean(dim=1)


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c // 4), c)


class ResBlock(nn.Module):
    """Conv block with adaptive group-norm conditioning (scale/shift from time+text)."""

    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.n1 = _gn(cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.n2 = _gn(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        s, b = self.emb(e)[:, :, None, None].chunk(2, dim=1)
        h = self.n2(h) * (1 + s) + b
        h = self.c2(F.silu(h))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Self-attention over pixels, then cross-attention to the caption slots."""

    def __init__(self, c: int, ctx: int, heads: int, self_attn: bool = True) -> None:
        super().__init__()
        self.use_self = self_attn
        if self_attn:
            self.n1 = _gn(c)
            self.self_attn = Attention(c, c, heads)
        self.n2 = _gn(c)
        self.cross = Attention(c, ctx, heads)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        if self.use_self:
            h = self.n1(x).flatten(2).transpose(1, 2)
            x = x + self.self_attn(h, h).transpose(1, 2).reshape(b, c, hh, ww)
        h = self.n2(x).flatten(2).transpose(1, 2)
        return x + self.cross(h, ctx).transpose(1, 2).reshape(b, c, hh, ww)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = (t[:, None] * 1000.0) * freqs[None]
    return torch.cat([torch.cos(a), torch.sin(a)], dim=1)


class ShapesDenoiser(nn.Module):
    """v(x_t, t, caption): rectified-flow velocity ``noise - image`` for x_t = (1-t) x + t noise."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        emb = cfg.base * 4
        self.text = TextEncoder(cfg.text_dim, cfg.text_layers, cfg.heads)
        self.t_mlp = nn.Sequential(nn.Linear(cfg.base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.txt_mlp = nn.Sequential(nn.Linear(cfg.text_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        # Two coordinate channels make absolute position ("top left") trivially
        # available to the convolutions instead of inferred from padding.
        s = cfg.image_size
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        self.register_buffer("coords", torch.stack([xx, yy])[None], persistent=False)
        self.inp = nn.Conv2d(3 + 2, cfg.base, 3, padding=1)

        chans = [cfg.base * m for m in cfg.mults]
        self.down = nn.ModuleList()
        skips = [cfg.base]
        c = cfg.base
        res = s
        for i, co in enumerate(chans):
            blocks = nn.ModuleList([ResBlock(c, co, emb)])
            c = co
            if res in cfg.attn_res:
                blocks.append(AttnBlock(c, cfg.text_dim, cfg.heads, res in cfg.self_attn_res))
            self.down.append(blocks)
            skips.append(c)
            if i < len(chans) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
                skips.append(c)
                res //= 2
        self.mid1 = ResBlock(c, c, emb)
        self.mid_attn = AttnBlock(c, cfg.text_dim, cfg.heads)
        self.mid2 = ResBlock(c, c, emb)
        self.up = nn.ModuleList()
        for i, co in reversed(list(enumerate(chans))):
            for _ in range(2):
                blocks = nn.ModuleList([ResBlock(c + skips.pop(), co, emb)])
                c = co
                if res in cfg.attn_res:
                    blocks.append(AttnBlock(c, cfg.text_dim, cfg.heads, res in cfg.self_attn_res))
                self.up.append(blocks)
            if i > 0:
                self.up.append(
                    nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)])
                )
                res *= 2
        assert not skips
        self.out_norm = _gn(c)
        self.out = nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        ctx, pooled = self.text(tokens)
        e = self.t_mlp(timestep_embedding(t, self.cfg.base)) + self.txt_mlp(pooled)
        e = F.silu(e)
        h = self.inp(torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], dim=1))
        hs = [h]
        for blocks in self.down:
            for m in blocks:
                if isinstance(m, ResBlock):
                    h = m(h, e)
                elif isinstance(m, AttnBlock):
                    h = m(h, ctx)
                else:
                    h = m(h)
            hs.append(h)
        h = self.mid1(h, e)
        h = self.mid_attn(h, ctx)
        h = self.mid2(h, e)
        for blocks in self.up:
            first = blocks[0]
            if isinstance(first, ResBlock):
                h = first(torch.cat([h, hs.pop()], dim=1), e)
                for m in blocks[1:]:
                    h = m(h, ctx)
            else:
                for m in blocks:
                    h = m(h)
        return self.out(F.silu(self.out_norm(h)))
