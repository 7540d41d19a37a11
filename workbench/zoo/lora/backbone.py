"""A frozen pretrained timm backbone cut before its adapted modules: the prefix runs once per image (its features are
cached by the zoo), the tail carries peft LoRA and the head. Used by the image-task LoRA zoo (and any zoo over
frozen image features, e.g. D2NWG's per-dataset heads on EfficientNet-Lite0)."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn

from workbench.core.device import DeviceLike, resolve_device
from workbench.core.progress import tqdm
from workbench.data import imagenet_input
from workbench.evaluation.evaluate import split_model
from workbench.nn.architectures import ArchConfig, build_model

__all__ = ["BackboneConfig", "build_backbone", "backbone_features", "adapted_tail"]


class BackboneConfig(Protocol):
    """What a zoo config says about its backbone and adapter (e.g. :class:`~workbench.zoo.lora.tasks.LoRAZooConfig`)."""

    backbone: str
    pretrained: bool
    image_size: int
    n_outputs: int
    target_modules: tuple[str, ...]
    rank: int
    alpha: float
    seed: int


def _to_backbone_input(x: torch.Tensor, size: int) -> torch.Tensor:
    """Standardised grey images → 3-channel ImageNet-normalised images of ``size``×``size``."""
    if x.ndim == 2:  # flat MNIST rows
        side = int(round(x.shape[1] ** 0.5))
        x = x.reshape(len(x), 1, side, side)
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-8)  # per image to [0, 1]: independent of the dataset's standardisation
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return imagenet_input(x, size)


def build_backbone(cfg: BackboneConfig) -> tuple[nn.Module, nn.Module, dict[str, str]]:
    """(frozen prefix, tail to adapt, tensor-name map into the tail) of the configured timm backbone."""

    arch = ArchConfig(name=f"timm:{cfg.backbone}", input_shape=(3, cfg.image_size, cfg.image_size),
                      num_classes=cfg.n_outputs, pretrained=cfg.pretrained)
    model = build_model(arch, seed=cfg.seed).eval()
    names = [n for n in model.state_dict() if any(n == m or n.startswith(m + ".") for m in cfg.target_modules)]
    if not names:
        raise ValueError(f"target modules {list(cfg.target_modules)} are not in {cfg.backbone}; "
                         f"try one of {[n for n, _ in model.named_children()][:8]}")
    probe = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    prefix, tail, name_map = split_model(model, names, probe)
    if isinstance(prefix, nn.Identity):
        raise ValueError(f"{cfg.backbone} cannot be cut before {list(cfg.target_modules)}: the features would "
                         "not be reusable (adapt modules of its last chain of blocks)")
    return prefix, tail, name_map


def backbone_features(prefix: nn.Module, x: torch.Tensor, image_size: int, batch: int = 250,
                      progress: bool = True, device: DeviceLike = None) -> torch.Tensor:
    """Prefix output for every image (no gradients), in batches, computed on ``device`` (default: the CPU) and
    returned on the CPU."""
    dev = resolve_device(device)
    prefix = prefix.to(dev)
    outs = []
    with torch.no_grad():
        for i in tqdm(range(0, len(x), batch), desc="backbone features", disable=not progress, leave=False):
            outs.append(prefix(_to_backbone_input(x[i:i + batch].to(dev), image_size)).cpu())
    prefix.to("cpu")
    return torch.cat(outs)


def adapted_tail(cfg: BackboneConfig, tail: nn.Module, name_map: dict[str, str]) -> nn.Module:
    """The tail with peft LoRA injected into the target modules (names mapped into the tail)."""
    # imported here: peft takes ~6 s to import (it pulls in transformers) and only LoRA zoos need it
    from peft import LoraConfig, inject_adapter_in_model

    targets = sorted({name_map[n].rsplit(".", 1)[0] for n in name_map
                      if any(n == m + ".weight" for m in cfg.target_modules)})
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    return inject_adapter_in_model(lora, tail)
