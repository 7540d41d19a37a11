"""A 1D convolutional UNet denoiser with a timestep embedding and an optional condition embedding.

The condition (a vector per sample: text/image/dataset embedding) is projected and added at the bottleneck,
as in Cond P-Diff, and also to the timestep embedding so every block sees it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.config import JSONConfig

__all__ = ["UNetConfig", "UNet1D", "timestep_embedding"]


@dataclass(frozen=True)
class UNetConfig(JSONConfig, name="U-Net config"):
    """Size of the denoiser."""

    in_channels: int
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2)
    time_dim: int = 128
    cond_dim: int = 0     # 0: unconditional
    cond_vocab: int = 0   # > 0: cond is an integer id in 0..vocab (vocab = null) with a learnable embedding
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _gn(c: int) -> nn.GroupNorm:
    # up to 8 groups, the largest count that divides c: channel widths like 12 (4 + 8 at a skip) would otherwise
    # fail with torch's divisibility error; every width that worked before keeps its group count
    g = min(8, c)
    while c % g:
        g -= 1
    return nn.GroupNorm(g, c)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _gn(c_in), nn.Conv1d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = _gn(c_out), nn.Conv1d(c_out, c_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return h + self.skip(x)


class UNet1D(nn.Module):
    """ε- or x0-predicting denoiser for (B, C, L) latents."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0, td = cfg.base_channels, cfg.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(td, td * 2), nn.SiLU(), nn.Linear(td * 2, td))
        self.cond_mlp = (nn.Sequential(nn.Linear(cfg.cond_dim, td), nn.SiLU(), nn.Linear(td, td))
                         if cfg.cond_dim else None)
        # a learnable table of task codes (Cond P-Diff's "learnable" condition); its last row is the null condition
        self.cond_embed = nn.Embedding(cfg.cond_vocab + 1, cfg.cond_dim) if cfg.cond_vocab and cfg.cond_dim else None
        self.stem = nn.Conv1d(cfg.in_channels, c0, 3, padding=1)
        chans = [c0 * m for m in cfg.channel_mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c_prev = c0
        for i, c in enumerate(chans):
            self.down.append(_ResBlock(c_prev, c, td, cfg.dropout))
            self.downsample.append(nn.Conv1d(c, c, 4, stride=2, padding=1) if i < len(chans) - 1 else nn.Identity())
            c_prev = c
        self.mid1 = _ResBlock(c_prev, c_prev, td, cfg.dropout)
        self.mid_cond = nn.Linear(td, c_prev) if cfg.cond_dim else None
        self.mid2 = _ResBlock(c_prev, c_prev, td, cfg.dropout)
        self.up = nn.ModuleList()
        for i, c in reversed(list(enumerate(chans))):
            self.up.append(_ResBlock(c_prev + c, c, td, cfg.dropout))
            c_prev = c
        self.out = nn.Sequential(_gn(c_prev), nn.SiLU(), nn.Conv1d(c_prev, cfg.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @property
    def length_unit(self) -> int:
        """Latent lengths are padded to a multiple of this."""
        return 2 ** (len(self.cfg.channel_mults) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise ``x`` (B, C, L) at timesteps ``t`` (B,), optionally conditioned on ``cond`` (B, cond_dim)."""
        L = x.shape[-1]
        pad = (-L) % self.length_unit
        if pad:
            x = F.pad(x, (0, pad))
        emb = self.time_mlp(timestep_embedding(t, self.cfg.time_dim))
        c_emb = None
        if self.cond_mlp is not None:
            if cond is None:
                raise ValueError("this UNet is conditional: pass cond=(B, cond_dim)")
            if self.cond_embed is not None:
                cond = self.cond_embed(cond.reshape(len(cond), -1)[:, 0].round().long())
            c_emb = self.cond_mlp(cond)
            emb = emb + c_emb
        h = self.stem(x)
        skips = []
        for block, ds in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = ds(h)
        h = self.mid1(h, emb)
        if c_emb is not None:
            h = h + self.mid_cond(c_emb)[:, :, None]  # Cond P-Diff: the condition enters at the bottleneck
        h = self.mid2(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-1], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.out(h)[..., :L]
