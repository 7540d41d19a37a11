"""A linear autoencoder solved in closed form: whitened PCA coefficients as the latent.

Independently trained (then aligned) members have an almost flat spectrum — no low-dimensional structure for a
conv AE to find, and a conv AE needs minutes to merely approach the zoo. PCA with all N − 1 components
reconstructs every member exactly (to float precision) and fits in a second, so the diffusion model alone decides
what is generated."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["PCAAutoencoder"]


class PCAAutoencoder(nn.Module):
    """encode: (B, P) → (B, 1, k) whitened coefficients; decode inverts it (exact within the zoo's span)."""

    def __init__(self, in_dim: int, n_components: int) -> None:
        super().__init__()
        if n_components < 1 or in_dim < 1:
            raise ValueError(f"PCA latent needs in_dim >= 1 and n_components >= 1, got {in_dim}, {n_components}")
        self.in_dim, self.n_components = in_dim, n_components
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("components", torch.zeros(n_components, in_dim))
        self.register_buffer("scale", torch.ones(n_components))

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(channels, length) of the latent."""
        return 1, self.n_components

    def fit(self, x: torch.Tensor) -> "PCAAutoencoder":
        """Principal axes of ``x`` (N, P) in float64; keeps the top ``n_components`` (at most N − 1)."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected (N, {self.in_dim}) vectors, got {tuple(x.shape)}")
        if self.n_components > len(x) - 1:
            raise ValueError(f"{len(x)} members span at most {len(x) - 1} directions; asked for "
                             f"{self.n_components} PCA components (lower pca_components or collect more members)")
        xd = x.double()
        mean = xd.mean(0)
        _, s, vh = torch.linalg.svd(xd - mean, full_matrices=False)
        k = self.n_components
        self.mean.copy_(mean.float())
        self.components.copy_(vh[:k].float())
        # whitening: every coefficient has unit variance over the zoo; guard rank-deficient zoos
        self.scale.copy_((s[:k] / (len(x) - 1) ** 0.5).clamp_min(1e-12).float())
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P) → (B, 1, k)."""
        return (((x - self.mean) @ self.components.T) / self.scale)[:, None, :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 1, k) → (B, P)."""
        return self.mean + (z.reshape(len(z), -1) * self.scale) @ self.components
