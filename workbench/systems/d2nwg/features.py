"""Frozen EfficientNet-Lite0 features of D2NWG's images, computed once and shared by everything downstream.

The backbone is cut where the LoRA variant adapts it (before ``conv_head``): the *prefix* output is stored per
image; the *pooled* features (the CH setting's input: conv_head → BN → global pool, 1280-d) follow from it through
the frozen tail, so the head zoo, the LoRA zoo, the dataset encoder and every baseline see the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from workbench.core.device import DeviceLike
from workbench.zoo.lora.backbone import adapted_tail, backbone_features, build_backbone
from workbench.zoo.lora.engine import head_name

__all__ = ["BackboneSettings", "ImageFeaturizer"]


@dataclass(frozen=True)
class BackboneSettings:
    """What :func:`~workbench.zoo.lora.backbone.build_backbone` needs (the zoo config carries the same fields)."""

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    image_size: int = 64
    n_outputs: int = 5
    target_modules: tuple[str, ...] = ("conv_head",)
    rank: int = 4
    alpha: float = 8.0
    seed: int = 0


class ImageFeaturizer:
    """Images (N, C, H, W) in [0, 1] → prefix features → pooled features, with the backbone built once."""

    def __init__(self, settings: BackboneSettings) -> None:
        self.settings = settings
        self.prefix, self.tail, self.name_map = build_backbone(settings)
        head = head_name(self.tail, settings.n_outputs)
        children = dict(self.tail.named_children())
        if head not in children:
            raise ValueError(f"the head {head!r} of {settings.backbone} is not a direct child of the cut tail: the "
                             "pooled features cannot be separated from it")
        # the tail without its head: conv_head → BN → pool for EfficientNet-Lite0 (frozen, eval mode)
        self.trunk = nn.Sequential(*[m for n, m in children.items() if n != head]).eval()

    @property
    def n_features(self) -> int:
        """Width of the pooled features (1280 for EfficientNet-Lite0)."""
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.settings.image_size, self.settings.image_size)
            return int(self.trunk(self.prefix(probe)).shape[1])

    def prefix_features(self, images: torch.Tensor, progress: bool = False, device: DeviceLike = None) -> torch.Tensor:
        """The stored representation: the backbone's output before the adapted modules (computed on ``device``,
        default the CPU; returned on the CPU)."""
        if images.ndim != 4:
            raise ValueError(f"images are (N, C, H, W) in [0, 1], got shape {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("the images contain NaN or Inf values")
        return backbone_features(self.prefix, images.float(), self.settings.image_size, progress=progress,
                                 device=device)

    def pooled(self, prefix: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        """Prefix features → pooled features (the linear head's input)."""
        with torch.no_grad():
            return torch.cat([self.trunk(prefix[i:i + batch]) for i in range(0, len(prefix), batch)])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of images."""
        return self.pooled(self.prefix_features(images))

    def lora_model(self) -> nn.Module:
        """The tail with LoRA on the target modules (a fresh copy each call: the LoRA variant's model)."""
        _, tail, name_map = build_backbone(self.settings)
        return adapted_tail(self.settings, tail, name_map)
