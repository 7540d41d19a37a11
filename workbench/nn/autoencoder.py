"""p-diff's parameter autoencoder: 1D convolutions over the (padded, folded) parameter vector, with noise
augmentation on the input and on the latent during training; optionally a β-VAE."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.config import JSONConfig
from workbench.core.data_parallel import shard_batch
from workbench.core.device import host_to_device

__all__ = ["AEConfig", "ParamAutoencoder"]


@dataclass(frozen=True)
class AEConfig(JSONConfig, name="autoencoder config"):
    """Shape and training noise of the parameter autoencoder."""

    in_dim: int
    channels: tuple[int, ...] = (32, 64, 128, 128)  # one stride-2 conv per entry (p-diff: 4 layers)
    latent_channels: int = 4
    fold: int = 1            # the vector is cut into `fold` rows (input channels) before the convolutions
    input_noise: float = 0.001
    latent_noise: float = 0.1
    variational: bool = False
    beta: float = 1e-4       # KL weight of the β-VAE

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.in_dim < 1 or self.fold < 1 or not self.channels:
            raise ValueError(f"invalid autoencoder config {self}")

    @property
    def padded_len(self) -> int:
        """Sequence length after padding: a multiple of 2^depth."""
        unit = 2 ** len(self.channels)
        return math.ceil(math.ceil(self.in_dim / self.fold) / unit) * unit

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(channels, length) of the latent."""
        return self.latent_channels, self.padded_len // 2 ** len(self.channels)


def _norm(c: int) -> nn.Module:
    return nn.GroupNorm(min(8, c), c)


class ParamAutoencoder(nn.Module):
    """Encoder: Conv1d stem, then per level a stride-2 Conv1d + GroupNorm + LeakyReLU; decoder mirrors it."""

    def __init__(self, cfg: AEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        enc: list[nn.Module] = [nn.Conv1d(cfg.fold, ch[0], 3, padding=1), nn.LeakyReLU(0.2)]
        c_prev = ch[0]
        for c in ch:
            enc += [nn.Conv1d(c_prev, c, 4, stride=2, padding=1), _norm(c), nn.LeakyReLU(0.2)]
            c_prev = c
        out_c = cfg.latent_channels * (2 if cfg.variational else 1)
        enc.append(nn.Conv1d(c_prev, out_c, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(cfg.latent_channels, ch[-1], 1), nn.LeakyReLU(0.2)]
        c_prev = ch[-1]
        for c in reversed(ch):
            dec += [nn.ConvTranspose1d(c_prev, c, 4, stride=2, padding=1), _norm(c), nn.LeakyReLU(0.2)]
            c_prev = c
        dec.append(nn.Conv1d(c_prev, cfg.fold, 3, padding=1))
        self.decoder = nn.Sequential(*dec)

    def _to_seq(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.cfg.in_dim:
            raise ValueError(f"autoencoder expects vectors of length {self.cfg.in_dim}, got {x.shape[-1]}")
        pad = self.cfg.padded_len * self.cfg.fold - x.shape[-1]
        return F.pad(x, (0, pad)).view(x.shape[0], self.cfg.fold, self.cfg.padded_len)

    def encode_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, logvar) of the latent; logvar is None for a plain AE."""
        h = self.encoder(self._to_seq(x))
        if self.cfg.variational:
            mu, logvar = h.chunk(2, dim=1)
            return mu, logvar.clamp(-30, 20)
        return h, None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent (the mean for a VAE)."""
        return self.encode_stats(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent → flat vector (B, in_dim)."""
        return self.decoder(z).reshape(z.shape[0], -1)[:, : self.cfg.in_dim]

    def _noise_levels(self, input_noise: float | None, latent_noise: float | None) -> tuple[float, float]:
        return (self.cfg.input_noise if input_noise is None else input_noise,
                self.cfg.latent_noise if latent_noise is None else latent_noise)

    def draw_noise(self, n: int, generator: torch.Generator | None = None, input_noise: float | None = None,
                   latent_noise: float | None = None) -> tuple[torch.Tensor | None, ...]:
        """The training noise of a batch of ``n`` (input, VAE sample, latent; None where unused), drawn on the CPU
        where the seeded generator lives, in the order :meth:`loss` uses it."""
        a_in, a_lat = self._noise_levels(input_noise, latent_noise)
        lat = (n, *self.cfg.latent_shape)
        noise_in = torch.randn((n, self.cfg.in_dim), generator=generator) if a_in else None
        noise_var = torch.randn(lat, generator=generator) if self.cfg.variational else None
        noise_lat = torch.randn(lat, generator=generator) if a_lat else None
        return noise_in, noise_var, noise_lat

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None,
             input_noise: float | None = None, latent_noise: float | None = None) -> tuple[torch.Tensor, dict]:
        """Training loss with p-diff's noise augmentation (input noise before encoding, latent noise after)."""
        noise = self.draw_noise(x.shape[0], generator, input_noise, latent_noise)
        return self.loss_given_noise(x, *(None if t is None else host_to_device(t, x.device) for t in noise),
                                     input_noise=input_noise, latent_noise=latent_noise)

    def loss_given_noise(self, x: torch.Tensor, noise_in: torch.Tensor | None, noise_var: torch.Tensor | None,
                         noise_lat: torch.Tensor | None, *, input_noise: float | None = None,
                         latent_noise: float | None = None) -> tuple[torch.Tensor, dict]:
        """:meth:`loss` with the noise of :meth:`draw_noise` given (on ``x``'s device): the part a CUDA graph
        replays. Every draw is of the full batch; shard_batch slices this process's rows (identity unless
        data-parallel), so the noise is the same on every device and world size."""
        a_in, a_lat = self._noise_levels(input_noise, latent_noise)
        x, noise_in, noise_var, noise_lat = shard_batch(x, noise_in, noise_var, noise_lat)
        mu, logvar = self.encode_stats(x + a_in * noise_in if a_in else x)
        z = mu + torch.exp(0.5 * logvar) * noise_var if logvar is not None else mu
        if a_lat:
            z = z + a_lat * noise_lat
        rec = F.mse_loss(self.decode(z), x)
        # detached tensors, read by the loop only when it logs (a float() here would sync every step)
        logs = {"recon": rec.detach()}
        if logvar is None:
            return rec, logs
        kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        logs["kl"] = kl.detach()
        return rec + self.cfg.beta * kl, logs
