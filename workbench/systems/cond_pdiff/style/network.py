"""The compact image-to-image network every style LoRA adapts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.config import JSONConfig

__all__ = ["StyleNetConfig", "StyleNet"]


# -- the base image-to-image network ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StyleNetConfig(JSONConfig, name="style network config"):
    """A compact fully convolutional image-to-image network: ``depth`` 3×3 convolutions, receptive field
    2·depth + 1 px (no dilation: peft's conv LoRA does not carry a dilation into its A factor)."""

    channels: int = 32
    depth: int = 7

    def __post_init__(self) -> None:
        if self.depth < 2:
            raise ValueError(f"the style network needs depth >= 2, got {self.depth}")


class StyleNet(nn.Module):
    """conv3×3 layers with ReLU between them, RGB in and out (no residual: the identity is learned)."""

    def __init__(self, cfg: StyleNetConfig = StyleNetConfig()) -> None:
        super().__init__()
        n = cfg.depth
        chans = [3] + [cfg.channels] * (n - 1) + [3]
        for i in range(n):
            self.add_module(f"conv{i + 1}", nn.Conv2d(chans[i], chans[i + 1], 3, padding=1))
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.n + 1):
            x = getattr(self, f"conv{i}")(x)
            if i < self.n:
                x = F.relu(x)
        return x
