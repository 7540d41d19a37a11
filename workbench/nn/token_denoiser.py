"""A transformer denoiser over a set (or sequence) of latent tokens, each with its own condition.

D2NWG-style head generation denoises one latent token per class row; the condition of token ``c`` is the dataset
encoding of class ``c``, added through one linear adapter. Without positional embeddings the network is
permutation-equivariant over tokens — reordering the classes reorders the generated rows, which is what ties row
``c`` to class ``c``. Call signature as the other denoisers: ``model(x, t, cond)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from workbench.core.config import JSONConfig
from workbench.nn.unet1d import timestep_embedding

__all__ = ["TokenDenoiserConfig", "TokenDenoiser"]


@dataclass(frozen=True)
class TokenDenoiserConfig(JSONConfig, name="token denoiser config"):
    """Token width, condition width per token (0: unconditional), and transformer size."""

    token_dim: int
    cond_dim: int = 0
    hidden: int = 256
    depth: int = 3
    heads: int = 4
    time_dim: int = 128
    n_positions: int = 0       # > 0: a learned embedding per token position (order-dependent tokens)

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by heads={self.heads}")
        if min(self.token_dim, self.hidden, self.depth, self.heads, self.time_dim) < 1 or self.cond_dim < 0:
            raise ValueError(f"invalid token denoiser sizes: {self}")


class TokenDenoiser(nn.Module):
    """Input projection + time embedding + per-token condition adapter → pre-norm transformer → ε (or x0)."""

    def __init__(self, cfg: TokenDenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.inp = nn.Linear(cfg.token_dim, h)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.adapter = nn.Linear(cfg.cond_dim, h) if cfg.cond_dim else None  # D2NWG's one linear adapter
        self.pos = nn.Parameter(torch.zeros(cfg.n_positions, h)) if cfg.n_positions else None
        layer = nn.TransformerEncoderLayer(h, cfg.heads, dim_feedforward=2 * h, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, cfg.token_dim))
        nn.init.zeros_(self.out[-1].weight)  # start as the zero predictor: a stable first step
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise tokens ``x`` (B, T, token_dim) at timesteps ``t`` (B,); ``cond`` (B, T, cond_dim), or (B,
        T·cond_dim) flattened."""
        if x.ndim != 3 or x.shape[-1] != self.cfg.token_dim:
            raise ValueError(f"tokens are (batch, tokens, {self.cfg.token_dim}), got shape {tuple(x.shape)}")
        h = self.inp(x) + self.time_mlp(timestep_embedding(t, self.cfg.time_dim))[:, None, :]
        if self.adapter is not None:
            if cond is None:
                raise ValueError(f"this denoiser is conditional: pass cond of shape (B, {x.shape[1]}, "
                                 f"{self.cfg.cond_dim})")
            h = h + self.adapter(cond.reshape(len(x), x.shape[1], self.cfg.cond_dim))
        if self.pos is not None:
            if x.shape[1] > self.cfg.n_positions:
                raise ValueError(f"{x.shape[1]} tokens but position embeddings for {self.cfg.n_positions}")
            h = h + self.pos[: x.shape[1]]
        return self.out(self.blocks(h))
