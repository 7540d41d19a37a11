"""A linear autoencoder solved in closed form: whitened PCA coefficients as the latent.

Independently trained (then aligned) members have an almost flat spectrum — no low-dimensional structure for a
conv AE to find, and a conv AE needs minutes to merely approach the zoo. PCA with all N − 1 components
reconstructs every member exactly (to float precision) and fits in a second, so the diffusion model alone decides
what is generated."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["PCAAutoencoder"]


#: Above this many entries (and wider than tall) the zoo's axes come from its Gram matrix instead of an SVD.
GRAM_ENTRIES = 2_000_000


def _principal_axes(xc: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` singular values and right singular vectors of the centred (N, P) matrix ``xc`` (float64).

    Large wide zoos (P ≫ N, over :data:`GRAM_ENTRIES` entries: 1,200 LoRA members of 12,800 parameters) decompose
    the N × N Gram matrix instead of ``xc``: the same axes from one matrix product and an N × N eigendecomposition
    (8.6 s → 0.7 s on 2 cores for that zoo). Their signs are fixed (each axis's largest entry positive) and
    directions the zoo does not span (singular value ≈ 0) come back as zero rows. Smaller zoos keep the thin SVD,
    which is fast there, exactly as before."""
    n, p = xc.shape
    if p <= n or n * p < GRAM_ENTRIES:
        _, s, vh = torch.linalg.svd(xc, full_matrices=False)
        return s[:k], vh[:k]
    lam, u = torch.linalg.eigh(xc @ xc.T)  # ascending
    lam, u = lam.flip(0)[:k].clamp_min(0), u.flip(1)[:, :k]
    s = lam.sqrt()
    spanned = s > s[0] * 1e-6 if len(s) else s.bool()  # the Gram matrix squares: λ below 1e-12·λ_max is noise
    vh = (u.T @ xc) / torch.where(spanned, s, torch.ones_like(s))[:, None]
    vh[~spanned] = 0
    sign = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))
    return s, vh * torch.where(sign == 0, torch.ones_like(sign), sign)


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
        s, vh = _principal_axes(xd - mean, self.n_components)
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
