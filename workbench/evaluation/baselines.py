"""Honest baselines for generated models: the soup (weight average), originals plus noise, a per-position
Gaussian fitted to the zoo (no training at all), and originals fine-tuned a few steps."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from workbench.core.device import resolve_device
from workbench.core.params import ParamSpec
from workbench.data import batch_schedule
from workbench.evaluation.evaluate import split_model

__all__ = ["finetuned", "finetuned_members", "noise_added", "per_position_gaussian", "soup"]


def soup(vectors: torch.Tensor) -> torch.Tensor:
    """The weight average of the zoo, (1, P), computed in float64 (a float32 sum over many members drops the low bits
    of small entries beside large ones) and returned as float32."""
    return vectors.double().mean(0, keepdim=True).float()


def noise_added(vectors: torch.Tensor, spec: ParamSpec, sigma: float, *, seed: int = 0) -> torch.Tensor:
    """Each original plus Gaussian noise of ``sigma`` × the std of each of its tensors' entries."""
    g = torch.Generator().manual_seed(seed)
    out = vectors.clone()
    for sl in spec.slices().values():
        block = vectors[:, sl]
        scale = block.std(dim=1, keepdim=True) if block.shape[1] > 1 else block.abs()
        out[:, sl] = block + sigma * scale * torch.randn(block.shape, generator=g)
    return out


def per_position_gaussian(vectors: torch.Tensor, n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` draws from independent per-position Gaussians fitted to the zoo (mean and std of each coordinate)."""
    g = torch.Generator().manual_seed(seed)
    v = vectors.double()
    mean, std = v.mean(0), v.std(0, unbiased=True) if len(v) > 1 else torch.zeros(v.shape[1], dtype=torch.float64)
    return (mean + std * torch.randn((n, v.shape[1]), generator=g, dtype=torch.float64)).float()


def finetuned(vectors: torch.Tensor, model: nn.Module, spec: ParamSpec, x: torch.Tensor, y: torch.Tensor, *,
              steps: int = 10, lr: float = 0.01, momentum: float = 0.9, batch_size: int = 128, seed: int = 0,
              frozen_eval: bool = True) -> torch.Tensor:
    """Each original trained ``steps`` more SGD steps on the selected tensors (a new minibatch order).

    ``frozen_eval`` keeps BatchNorm in eval mode, as the dense-subset protocol does, so the frozen part stays
    the base checkpoint; the frozen prefix of the network runs once."""
    base = copy.deepcopy(model).to(x.device).eval()  # trains where the data lives
    prefix, suffix, name_map = split_model(base, spec.names, probe=x[:4])
    with torch.no_grad():
        feats = prefix(x)
    suffix.train(not frozen_eval)
    params = dict(suffix.named_parameters())
    trainable = [name_map[n] for n in spec.names if name_map[n] in params]
    for n, p in params.items():
        p.requires_grad_(n in trainable)
    out = []
    sched = batch_schedule(len(y), batch_size, 0, seed + 7919)
    for v in vectors:
        with torch.no_grad():
            for n, t in spec.unflatten(v).items():
                suffix.state_dict()[name_map[n]].copy_(t)
        opt = torch.optim.SGD([params[n] for n in trainable], lr=lr, momentum=momentum)
        for k in range(steps):
            idx = sched[k % len(sched)].to(x.device)
            loss = F.cross_entropy(suffix(feats[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sd = suffix.state_dict()
        out.append(torch.cat([sd[name_map[n]].detach().reshape(-1).float() for n in spec.names]).cpu())
    return torch.stack(out)


def finetuned_members(zoo, vectors: torch.Tensor, *, steps: int = 10, seed: int = 0,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """The fine-tuned baseline for a zoo: its own learning rate (the checkpoint phase's for dense protocols), and
    BatchNorm frozen exactly when the zoo's protocol froze it; trained on ``device`` (default: the CPU)."""
    data = zoo.data()
    if device is not None:
        data = data.to(resolve_device(device))
    lr, frozen = finetune_settings(zoo)
    return finetuned(vectors, zoo.model(), zoo.spec, data.x_train, data.y_train, steps=steps, lr=lr, seed=seed,
                     frozen_eval=frozen)


def finetune_settings(zoo) -> tuple[float, bool]:
    """(learning rate, BatchNorm frozen) of a zoo's fine-tuned baseline: from a collected zoo's config, from a zoo's
    own ``finetune_lr`` / ``frozen_eval`` attributes (e.g. :class:`~workbench.zoo.tensor_zoo.TensorZoo`), else
    lr 0.01 in train mode."""
    config = getattr(zoo, "config", None)
    if config is not None and hasattr(config, "protocol"):
        lr = config.checkpoint_lr if config.protocol != "seeds" else config.train.lr
        return float(lr), config.protocol == "dense_subset"
    return float(getattr(zoo, "finetune_lr", 0.01)), bool(getattr(zoo, "frozen_eval", False))
