"""A β-VAE over fixed-length vectors (e.g. the rows of classifier heads), with p-diff's noise augmentation.

``beta > 0`` is D2NWG's β-VAE (a Gaussian posterior, KL to N(0, I) weighted by β); ``beta = 0`` is p-diff's
recipe — a deterministic autoencoder whose robustness comes from noise on the input and on the latent — so one
module covers the paper and its ablation. Works on any leading shape: (..., in_dim) → (..., latent_dim).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.config import JSONConfig
from workbench.core.data_parallel import shard_batch
from workbench.core.device import host_to_device

__all__ = ["VAEConfig", "VectorVAE"]


@dataclass(frozen=True)
class VAEConfig(JSONConfig, name="VAE config"):
    """Size, KL weight and training noise of the vector β-VAE."""

    in_dim: int
    latent_dim: int = 32
    hidden: int = 256
    depth: int = 2
    beta: float = 1e-3          # 0: a plain noise-augmented autoencoder (p-diff's AE)
    input_noise: float = 0.001
    latent_noise: float = 0.1

    def __post_init__(self) -> None:
        if self.in_dim < 1 or self.latent_dim < 1 or self.hidden < 1 or self.depth < 1:
            raise ValueError(f"VAE sizes must be >= 1 (in_dim, latent_dim, hidden, depth), got {self}")
        if self.beta < 0 or self.input_noise < 0 or self.latent_noise < 0:
            raise ValueError("beta, input_noise and latent_noise must be >= 0")

    @property
    def variational(self) -> bool:
        """Whether the encoder has a posterior variance (β > 0)."""
        return self.beta > 0


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.LayerNorm(b), nn.SiLU()]
    return nn.Sequential(*layers)


class VectorVAE(nn.Module):
    """MLP encoder (→ mean, log-variance) and MLP decoder."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hid = [cfg.hidden] * cfg.depth
        self.encoder = _mlp([cfg.in_dim, *hid, cfg.latent_dim * (2 if cfg.variational else 1)])
        self.decoder = _mlp([cfg.latent_dim, *hid, cfg.in_dim])

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.cfg.in_dim:
            raise ValueError(f"the VAE takes vectors of length {self.cfg.in_dim}, got {x.shape[-1]}")

    def encode_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance) of the posterior; log-variance is None for β = 0."""
        self._check(x)
        h = self.encoder(x)
        if self.cfg.variational:
            mu, logvar = h.chunk(2, dim=-1)
            return mu, logvar.clamp(-30, 20)
        return h, None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent (the posterior mean)."""
        return self.encode_stats(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent → vector."""
        return self.decoder(z)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Reconstruction MSE (+ β·KL), with noise on the input and on the sampled latent."""
        c = self.cfg
        n = x.shape[0]
        # full-batch draws sliced to this process's rows (shard_batch: identity unless data-parallel)
        draw = lambda t: host_to_device(  # noqa: E731
            shard_batch(torch.randn((n, *t.shape[1:]), generator=generator))[0], t.device)
        noise = lambda t, s: t + s * draw(t) if s else t  # noqa: E731
        noise_in = draw(x) if c.input_noise else None
        x, = shard_batch(x)
        mu, logvar = self.encode_stats(x + c.input_noise * noise_in if c.input_noise else x)
        z = mu if logvar is None else mu + torch.exp(0.5 * logvar) * draw(mu)
        rec = F.mse_loss(self.decode(noise(z, c.latent_noise)), x)
        logs = {"recon": rec.detach()}  # read by the loop only when it logs
        if logvar is None:
            return rec, logs
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1))
        logs["kl"] = kl.detach()
        return rec + c.beta * kl, logs
