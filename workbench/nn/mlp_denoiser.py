"""An MLP denoiser for latents without positional structure (PCA coefficients, small task vectors).

A 1D UNet assumes neighbouring latent positions are related; PCA coefficients are not, so a residual MLP over the
flattened latent is the better inductive bias there. Same call signature as :class:`UNet1D`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from workbench.core.config import JSONConfig
from workbench.nn.unet1d import timestep_embedding

__all__ = ["MLPDenoiserConfig", "MLPDenoiser"]


@dataclass(frozen=True)
class MLPDenoiserConfig(JSONConfig, name="MLP denoiser config"):
    """Size of the MLP denoiser (``in_features`` = channels × length of the latent)."""

    in_features: int
    hidden: int = 512
    depth: int = 3
    time_dim: int = 128
    cond_dim: int = 0


class MLPDenoiser(nn.Module):
    """Residual MLP: input projection + time (+ condition) embedding, ``depth`` pre-norm residual blocks."""

    def __init__(self, cfg: MLPDenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.inp = nn.Linear(cfg.in_features, h)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.cond_mlp = nn.Sequential(nn.Linear(cfg.cond_dim, h), nn.SiLU(), nn.Linear(h, h)) if cfg.cond_dim else None
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(h), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h))
                                    for _ in range(cfg.depth))
        self.out = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, cfg.in_features))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise ``x`` (B, ...) at timesteps ``t`` (B,), optionally conditioned on ``cond`` (B, cond_dim)."""
        shape = x.shape
        h = self.inp(x.reshape(len(x), -1)) + self.time_mlp(timestep_embedding(t, self.cfg.time_dim))
        if self.cond_mlp is not None:
            if cond is None:
                raise ValueError("this denoiser is conditional: pass cond=(B, cond_dim)")
            h = h + self.cond_mlp(cond)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).reshape(shape)
