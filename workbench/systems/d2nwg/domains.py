"""Domains of the D2NWG meta-dataset: consistent shifts of the input distribution (rotation, colour, blur, ...).

A domain changes what the images look like, not what they mean: crossing sources with domains gives datasets
whose classifier weights must differ even when their labels are the same, which is what dataset-conditioned
weight generation has to pick up from the images. Each domain is one fixed kind of change whose strength is drawn
per image from a seeded generator, so the same call always gives the same images. Every output is RGB (grey inputs
are repeated to three channels first, so that colour domains can colour them) in [0, 1], as the frozen
EfficientNet-Lite0 feature extractor downstream expects before its own resize and normalisation.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["DOMAINS", "apply_domain", "domain_grid"]

DOMAINS: dict[str, str] = {
    "identity": "the images unchanged (grey repeated to RGB)",
    "rotation": "rotated counter-clockwise by 35°-55° (bilinear, black fill)",
    "inversion": "negative: 1 - x (dark strokes on a light background)",
    "tint": "duotone: strokes orange, background dark blue (colours jittered ±0.05 per image)",
    "blur": "Gaussian blur with sigma 1.0-1.5 px",
    "noise": "additive Gaussian noise with std 0.2-0.3, clipped to [0, 1]",
    "scale": "content shrunk about the centre by a factor 0.5-0.65 (black fill): small digits",
    "elastic": "elastic deformation: smoothed random displacement field (sigma 4 px, alpha 31-44 px at 28×28)",
    "contrast": "low contrast: pulled towards mid-grey, keeping 25%-40% of the original contrast",
    "occlusion": "a mid-grey square of 35%-45% of the side hiding part of the centre",
}


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _sample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp ``x`` by per-image affine maps (output → input, normalised coordinates), black outside."""
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotation(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    a = torch.deg2rad(_uniform(g, n, 35.0, 55.0))
    cos, sin = torch.cos(a), torch.sin(a)
    # Image rows grow downwards, so a counter-clockwise turn on screen samples the input at [[c, -s], [s, c]] p'
    # in pixel units; normalised coordinates scale x by w/2 and y by h/2, hence the aspect factors (non-square).
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    return _sample(x, theta)


def _inversion(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return 1.0 - x


def _tint(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    fg = torch.tensor([1.0, 0.55, 0.1]) + _uniform(g, 3 * n, -0.05, 0.05).view(n, 3)
    bg = torch.tensor([0.05, 0.1, 0.35]) + _uniform(g, 3 * n, -0.05, 0.05).view(n, 3)
    fg, bg = fg.clamp(0, 1).to(x).view(n, 3, 1, 1), bg.clamp(0, 1).to(x).view(n, 3, 1, 1)
    return x * fg + (1.0 - x) * bg


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """One normalised 1-D Gaussian kernel per sigma, (len(sigma), 2 * radius + 1)."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t[None] ** 2 / (2 * sigma[:, None] ** 2))
    return k / k.sum(1, keepdim=True)


def _smooth(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with one sigma per image, reflect-padded."""
    n, c, h, w = x.shape
    # reflect padding needs the pad to be smaller than the side; tiny images fall back to replicate
    radius = max(1, radius)
    mode = "reflect" if radius < min(h, w) else "replicate"
    k = _gaussian_kernels(sigma, radius).to(x).repeat_interleave(c, 0)  # (N*C, K): per image, per channel
    # all images in one grouped convolution: every (image, channel) plane is its own group with its own kernel
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode=mode)
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def _blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    sigma = _uniform(g, x.shape[0], 1.0, 1.5)
    return _smooth(x, sigma, math.ceil(3 * 1.5))


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    std = _uniform(g, x.shape[0], 0.2, 0.3).view(-1, 1, 1, 1)
    return x + (std * torch.randn(x.shape, generator=g)).to(x)


def _scale(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    s = _uniform(g, n, 0.5, 0.65)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / s  # output p samples the input at p / s: the content shrinks by s
    return _sample(x, theta)


def _elastic(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    size = min(h, w)
    # Simard et al. (2003) on 28×28 MNIST: uniform(-1, 1) fields, Gaussian sigma 4 px, alpha 34 px; scaled with the
    # image so that larger images wobble alike. Per image alpha is 0.9-1.3 × 34: the upper range makes the wobble
    # plainly visible (mean displacement ~1.3-1.7 px) while the digits stay readable.
    sigma_px, alpha_px = 4.0 * size / 28, 34.0 * size / 28
    field = 2.0 * torch.rand(n, 2, h, w, generator=g) - 1.0
    field = _smooth(field, torch.full((n,), sigma_px), math.ceil(3 * sigma_px))
    alpha = alpha_px * _uniform(g, n, 0.9, 1.3).view(n, 1, 1, 1)
    disp = field * alpha  # pixels
    # pixels → normalised coordinates (align_corners=False: the side spans 2 units)
    disp = torch.stack([disp[:, 0] * 2.0 / w, disp[:, 1] * 2.0 / h], dim=-1)
    base = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 1, h, w], align_corners=False)
    return F.grid_sample(x, (base + disp).to(x), mode="bilinear", padding_mode="zeros", align_corners=False)


def _contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    c = _uniform(g, x.shape[0], 0.25, 0.4).view(-1, 1, 1, 1).to(x)
    return 0.5 + c * (x - 0.5)


def _occlusion(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    frac = _uniform(g, n, 0.35, 0.45)
    # the square's centre stays in the middle half of the image, where the object (digit) is
    cy, cx = _uniform(g, n, 0.25, 0.75) * h, _uniform(g, n, 0.25, 0.75) * w
    half = frac * min(h, w) / 2
    rows = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
    inside = ((rows - cy.view(n, 1, 1)).abs() < half.view(n, 1, 1)) & \
             ((cols - cx.view(n, 1, 1)).abs() < half.view(n, 1, 1))
    return torch.where(inside[:, None].to(x.device), torch.full_like(x, 0.5), x)


_APPLY: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "identity": lambda x, g: x,
    "rotation": _rotation,
    "inversion": _inversion,
    "tint": _tint,
    "blur": _blur,
    "noise": _noise,
    "scale": _scale,
    "elastic": _elastic,
    "contrast": _contrast,
    "occlusion": _occlusion,
}


def _check_images(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (N, 1 or 3, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(x.shape)}; add the batch / "
                         f"channel axis (x[None] or x[:, None])")
    if not x.is_floating_point():
        raise ValueError(f"images must be floats in [0, 1], got dtype {x.dtype}; convert (uint8: x.float() / 255)")
    if x.numel() and not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values; clean them before applying a domain")
    if x.numel() and (x.min() < -1e-4 or x.max() > 1 + 1e-4):
        raise ValueError(f"images must be raw pixels in [0, 1], got values in [{float(x.min()):.3g}, "
                         f"{float(x.max()):.3g}]; apply domains before standardising / ImageNet-normalising")
    x = x.float().clamp(0.0, 1.0)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def apply_domain(x: torch.Tensor, domain: str, *, seed: int = 0) -> torch.Tensor:
    """Images ``x`` (N, 1 or 3, H, W) in [0, 1] shifted into ``domain``: (N, 3, H, W) float32 in [0, 1], seeded."""
    if domain not in _APPLY:
        raise ValueError(f"unknown domain {domain!r}; choose one of {list(DOMAINS)}")
    x = _check_images(x)
    if x.shape[0] == 0:  # nothing to shift (affine_grid rejects an empty batch)
        return x
    g = torch.Generator().manual_seed(int(seed))  # CPU draws, moved to x's device: same result on every device
    return _APPLY[domain](x, g).clamp(0.0, 1.0).contiguous()


def domain_grid(x: torch.Tensor, domains: Sequence[str], seed: int = 0) -> torch.Tensor:
    """The same images under each of ``domains``: (len(domains), N, 3, H, W), e.g. for a figure."""
    if isinstance(domains, str):
        raise ValueError(f"domains must be a sequence of names, e.g. [{domains!r}], not a single string")
    if len(domains) == 0:
        raise ValueError(f"domains is empty; pass some of {list(DOMAINS)}")
    return torch.stack([apply_domain(x, d, seed=seed) for d in domains])
