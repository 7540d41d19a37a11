"""Pretrained feature network behind style distances (Gram matrices), and image metrics (PSNR, SSIM)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from workbench.data import imagenet_input
from workbench.nn.architectures import ArchConfig, build_model
from workbench.systems.cond_pdiff.style.images import gaussian_blur

__all__ = ["StyleFeatures", "gram_distance", "psnr", "ssim"]


# -- pretrained features for Gram losses and distances ------------------------------------------------------------
class StyleFeatures(nn.Module):
    """The first blocks of pretrained EfficientNet-Lite0: feature maps for Gram matrices and the content loss."""

    def __init__(self, blocks: int = 3, size: int = 64, pretrained: bool = True) -> None:
        super().__init__()

        net = build_model(ArchConfig(name="timm:tf_efficientnet_lite0", input_shape=(3, size, size), num_classes=10,
                                     pretrained=pretrained)).eval()
        self.stem = nn.Sequential(net.conv_stem, net.bn1)
        self.blocks = nn.ModuleList(net.blocks[:blocks])
        self.size = size
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after each block of images in [0, 1]."""
        h = self.stem(imagenet_input(x, self.size))
        outs = []
        for b in self.blocks:
            h = b(h)
            outs.append(h)
        return outs

    @staticmethod
    def grams(feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Gram matrix per layer, normalised by the number of positions."""
        return [torch.einsum("nchw,ndhw->ncd", f, f) / (f.shape[2] * f.shape[3]) for f in feats]


def gram_distance(features: StyleFeatures, images: torch.Tensor, reference: torch.Tensor,
                  batch: int = 64) -> torch.Tensor:
    """Per image: relative Frobenius distance of its Gram matrices to the reference's, averaged over layers.

    ``reference`` is one image (3, H, W) — a style image — or one per image (N, 3, H, W) — an exact target of the
    same content, which keeps content differences out of the distance."""
    with torch.no_grad():
        per_image = reference.ndim == 4 and len(reference) > 1
        if per_image and len(reference) != len(images):
            raise ValueError(f"{len(reference)} reference images for {len(images)} images: pass one reference, "
                             "or one per image")
        ref_all = None if per_image else features.grams(features(reference.reshape(1, *reference.shape[-3:])))
        out = []
        for i in range(0, len(images), batch):
            g = features.grams(features(images[i:i + batch]))
            ref = features.grams(features(reference[i:i + batch])) if per_image else ref_all
            out.append(torch.stack([(a - r).flatten(1).norm(dim=1) / r.flatten(1).norm(dim=1)
                                    for a, r in zip(g, ref)]).mean(0))
    return torch.cat(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB) per image, for images in [0, 1]."""
    mse = ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (Gaussian window σ = 1.5, Wang et al. 2004), averaged over channels."""
    a, b = a.clamp(0, 1).double(), b.clamp(0, 1).double()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = gaussian_blur(a, sigma), gaussian_blur(b, sigma)
    var_a = gaussian_blur(a * a, sigma) - mu_a ** 2
    var_b = gaussian_blur(b * b, sigma) - mu_b ** 2
    cov = gaussian_blur(a * b, sigma) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return m.flatten(1).mean(1).float()
