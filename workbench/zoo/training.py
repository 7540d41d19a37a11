"""Training of zoo members: a plain per-model loop and a vectorised trainer for many small members at once.

Both follow exactly the same algorithm — SGD with momentum as ``torch.optim.SGD`` defines it (dampening 0):
``buf = momentum * buf + grad + weight_decay * p``; ``p -= lr * buf`` — over the same minibatch schedule
(``batch_schedule``: a seeded permutation per epoch, shared by all members), so member ``i`` of the vectorised
trainer is the model the loop trains from the same initial weights, up to floating-point summation order.

The vectorised MLP path stores the first layer of all M members side by side as one (in, M·hidden) matrix:
members share each minibatch, so the dominant layer is one large GEMM instead of M small ones, and the
momentum update is fused into the weight-gradient GEMM (``addmm(buf, xᵀ, δ, beta=momentum)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, vmap

from workbench.core.config import JSONConfig
from workbench.core.progress import tqdm
from workbench.data import batch_schedule
from workbench.nn.architectures import ArchConfig, build_model

__all__ = ["TrainConfig", "train_loop", "train_vectorized", "init_members", "mlp_train_flops", "sgd_step_"]


@dataclass(frozen=True)
class TrainConfig(JSONConfig, name="train config"):
    """SGD settings for training a member (or the base model of a checkpoint protocol)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    data_seed: int = 0  # the minibatch order; shared by every member so their GEMMs can be fused

    def __post_init__(self) -> None:
        for name, ok, rule in (("epochs", self.epochs >= 0, ">= 0"), ("batch_size", self.batch_size >= 1, ">= 1"),
                               ("lr", self.lr > 0, "> 0")):
            if not ok:
                raise ValueError(f"invalid training config: {name} must be {rule}, got {getattr(self, name)!r}")


def sgd_step_(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], bufs: Sequence[torch.Tensor],
              lr: float, momentum: float, weight_decay: float) -> None:
    """In-place SGD with momentum, identical to ``torch.optim.SGD`` (dampening 0, no Nesterov)."""
    with torch.no_grad():
        for p, g, b in zip(params, grads, bufs):
            if weight_decay:
                g = g.add(p, alpha=weight_decay)
            b.mul_(momentum).add_(g)
            p.add_(b, alpha=-lr)


# ---------------------------------------------------------------------------------------------
# The plain loop
# ---------------------------------------------------------------------------------------------

def train_loop(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    *,
    trainable: Sequence[str] | None = None,
    progress: bool = False,
    on_step: Callable[[int, nn.Module], None] | None = None,
    start_epoch: int = 0,
    optimizer_state: dict | None = None,
) -> list[float]:
    """Train one model in place with ``torch.optim.SGD``; returns the mean training loss of each epoch.

    ``trainable`` restricts training to those parameter names (the rest is frozen); ``on_step(step, model)``
    is called after every optimiser step (dense-checkpoint protocols save there).
    """
    named = dict(model.named_parameters())
    names = list(named) if trainable is None else list(trainable)
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ValueError(f"trainable names {unknown[:3]} are not parameters of the model")
    for n, p in named.items():
        p.requires_grad_(n in names)
    params = [named[n] for n in names]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    history = []
    step = start_epoch * len(batch_schedule(len(y), cfg.batch_size, 0, cfg.data_seed))
    for epoch in tqdm(range(start_epoch, cfg.epochs), desc="train", disable=not progress, leave=False):
        total, count = 0.0, 0
        for idx in batch_schedule(len(y), cfg.batch_size, epoch, cfg.data_seed):
            idx = idx.to(x.device)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total = total + loss.detach().double() * len(idx)  # a tensor: no host sync per step on a GPU
            count += len(idx)
            if on_step is not None:
                on_step(step, model)
        history.append(float(total) / max(count, 1))
    for p in model.parameters():
        p.requires_grad_(True)
    return history


# ---------------------------------------------------------------------------------------------
# Vectorised training
# ---------------------------------------------------------------------------------------------

def init_members(arch: ArchConfig, seeds: Sequence[int], dtype: torch.dtype = torch.float32
                 ) -> dict[str, torch.Tensor]:
    """Stacked initial state dicts (M, *shape): member ``i`` is ``build_model(arch, seed=seeds[i])``."""
    states = [build_model(arch, seed=int(s)).to(dtype).state_dict() for s in seeds]
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}



def _is_plain_mlp(model: nn.Module) -> bool:
    if not isinstance(model, nn.Sequential):
        return False
    kinds = [type(m) for m in model]
    if not kinds or kinds[0] is not nn.Flatten:
        return False
    body = kinds[1:]
    # Linear (ReLU Linear)* — the shape of mlp3
    return (len(body) % 2 == 1 and all(k is nn.Linear for k in body[::2])
            and all(k is nn.ReLU for k in body[1::2]))


class _BatchedMLP:
    """M MLPs trained together; first layer fused into one GEMM (see the module docstring)."""

    def __init__(self, names: list[str], state: Mapping[str, torch.Tensor]) -> None:
        self.names = names  # [fc1.weight, fc1.bias, fc2.weight, ...]
        w1, b1 = state[names[0]], state[names[1]]
        self.M, self.h1, self.d = w1.shape
        # (d, M*h1): column block m holds member m's first-layer weights, transposed
        self.w1t = w1.permute(2, 0, 1).reshape(self.d, self.M * self.h1).contiguous()
        self.b1 = b1.reshape(-1).clone()
        self.rest = [state[n].clone() for n in names[2:]]  # (M, out, in), (M, out), ...
        self.params = [self.w1t, self.b1, *self.rest]
        self.bufs = [torch.zeros_like(p) for p in self.params]

    def step(self, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        """One SGD step on a shared minibatch; returns each member's mean loss (M,)."""
        B, M, mom = x.shape[0], self.M, cfg.momentum
        x = x.reshape(B, -1)
        h = torch.addmm(self.b1, x, self.w1t)                       # (B, M*h1)
        # one contiguous (M, B, h1) copy, reused by the forward and the weight-gradient bmm
        acts = [h.clamp_min(0).view(B, M, self.h1).transpose(0, 1).contiguous()]
        pre = [h]
        n_rest = len(self.rest) // 2
        for i in range(n_rest):
            w, b = self.rest[2 * i], self.rest[2 * i + 1]
            z = torch.baddbmm(b.unsqueeze(1), acts[-1], w.transpose(1, 2))
            pre.append(z)
            if i < n_rest - 1:
                acts.append(z.clamp_min(0))
        logits = pre[-1]                                             # (M, B, C)
        # softmax by hand: log_softmax over a last dimension of ~10 is slow on CPU
        shifted = logits - logits.amax(-1, keepdim=True)
        delta = shifted.exp()
        norm = delta.sum(-1, keepdim=True)
        delta /= norm
        # y: (B,) shared by every member, or (M, B) — each member its own labels (per-task zoos)
        yy = (y if y.ndim == 2 else y.expand(M, B)).unsqueeze(-1)
        loss = (norm.squeeze(-1).log() - shifted.gather(-1, yy).squeeze(-1)).mean(1)
        delta.scatter_add_(-1, yy, torch.full_like(yy, -1.0, dtype=delta.dtype))
        delta /= B                                                   # dL/dlogits of the batch-mean loss
        grads: list[torch.Tensor | None] = [None] * len(self.params)
        for i in reversed(range(n_rest)):
            w = self.rest[2 * i]
            grads[2 + 2 * i] = torch.bmm(delta.transpose(1, 2), acts[i])
            grads[3 + 2 * i] = delta.sum(1)
            d_in = torch.bmm(delta, w)
            if i > 0:
                delta = torch.ops.aten.threshold_backward(d_in, pre[i], 0)
            else:
                d_in = d_in.transpose(0, 1).reshape(B, M * self.h1)
                delta = torch.ops.aten.threshold_backward(d_in, pre[0], 0)
        with torch.no_grad():
            # First layer: momentum buffer and gradient in one GEMM pass.
            b0 = self.bufs[0]
            torch.addmm(b0, x.t(), delta, beta=mom, out=b0)
            if cfg.weight_decay:
                b0.add_(self.w1t, alpha=cfg.weight_decay)
            self.w1t.add_(b0, alpha=-cfg.lr)
            grads[1] = delta.sum(0)
            sgd_step_(self.params[1:], grads[1:], self.bufs[1:], cfg.lr, mom, cfg.weight_decay)
        return loss

    def state(self) -> dict[str, torch.Tensor]:
        """Back to stacked nn.Linear layout (M, out, in)."""
        w1 = self.w1t.reshape(self.d, self.M, self.h1).permute(1, 2, 0).contiguous()
        out = {self.names[0]: w1, self.names[1]: self.b1.reshape(self.M, self.h1).clone()}
        out.update({n: p.clone() for n, p in zip(self.names[2:], self.rest)})
        return out


class _VmapMembers:
    """Any BN-free module, M copies via ``torch.func.functional_call`` under ``vmap``."""

    def __init__(self, model: nn.Module, names: list[str], state: Mapping[str, torch.Tensor]) -> None:
        self.names = names
        self.params = [state[n].clone().requires_grad_(True) for n in names]
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.M = self.params[0].shape[0]
        # Non-trained tensors (frozen params and buffers) are shared by all members.
        self.frozen = {k: v for k, v in model.state_dict().items() if k not in names}
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise ValueError("vectorised training does not support BatchNorm in train mode; use train_loop")

        def f(params: tuple[torch.Tensor, ...], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(model, ({**dict(zip(names, params)), **self.frozen},), (xb,))

        self.forward = vmap(f, in_dims=(0, None))

    def step(self, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        logits = self.forward(tuple(self.params), x)  # (M, B, C)
        targets = y.reshape(-1) if y.ndim == 2 else y.repeat(self.M)  # (M, B) per-member labels or shared (B,)
        per = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, reduction="none")
        loss = per.view(self.M, -1).mean(1)
        grads = torch.autograd.grad(loss.sum(), self.params)
        sgd_step_(self.params, grads, self.bufs, cfg.lr, cfg.momentum, cfg.weight_decay)
        return loss.detach()

    def state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in zip(self.names, self.params)}


def train_vectorized(
    arch: ArchConfig | nn.Module,
    init: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    *,
    trainable: Sequence[str] | None = None,
    progress: bool = False,
    force_generic: bool = False,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Train M members at once from stacked initial weights ``init`` (name → (M, *shape)).

    ``y`` is (n,) — every member learns the same labels — or (M, n): member ``m`` learns ``y[m]`` (one model per
    task, e.g. RPG's binary task codes), on the same inputs and minibatches.

    Returns the stacked final weights of the trained tensors and the (epochs, M) mean training loss.
    ``trainable`` (default: every parameter) selects which tensors are trained; others stay as in
    ``arch``'s model. ``arch`` may be a config or a template module (whose frozen tensors are shared).
    """
    model = build_model(arch) if isinstance(arch, ArchConfig) else arch
    dtype = next(iter(init.values())).dtype
    # the members train where the data lives (CUDA data: on CUDA); results stay there for the caller to move
    model = model.to(dtype=dtype, device=x.device)
    init = {k: v.to(x.device) for k, v in init.items()}
    names = list(dict(model.named_parameters())) if trainable is None else list(trainable)
    missing = [n for n in names if n not in init]
    if missing:
        raise ValueError(f"initial weights lack {missing[:3]}")
    if not force_generic and trainable is None and _is_plain_mlp(model):
        members: _BatchedMLP | _VmapMembers = _BatchedMLP(names, init)
    else:
        members = _VmapMembers(model, names, init)
    if y.ndim == 2 and y.shape[0] != members.M:
        raise ValueError(f"per-member labels y have {y.shape[0]} rows for {members.M} members; pass (M, n) or (n,)")
    x, n = x.to(dtype), y.shape[-1]
    if n != len(x):
        raise ValueError(f"{len(x)} inputs but {n} labels per member")
    history = []
    n_steps = len(batch_schedule(n, cfg.batch_size, 0, cfg.data_seed))
    bar = tqdm(total=cfg.epochs * n_steps, desc=f"train {members.M} members", disable=not progress, leave=False)
    for epoch in range(cfg.epochs):
        total = torch.zeros(members.M, dtype=torch.float64, device=x.device)  # summed where the loss is: no sync
        for idx in batch_schedule(n, cfg.batch_size, epoch, cfg.data_seed):
            idx = idx.to(x.device)
            loss = members.step(x[idx], y[..., idx], cfg)
            total += loss.detach().double() * len(idx)
            bar.update(1)
        history.append((total / n).cpu())
    bar.close()
    return members.state(), torch.stack(history) if history else torch.zeros(0, members.M)


def mlp_train_flops(arch: ArchConfig, n_samples: int) -> float:
    """FLOPs of training an MLP on ``n_samples`` examples: forward, weight gradients, and input gradients of
    every layer but the first (whose input needs none). Elementwise work is not counted."""
    d = 1
    for s in arch.input_shape:
        d *= s
    widths = [d, *arch.hidden, arch.num_classes]
    macs = [widths[i] * widths[i + 1] for i in range(len(widths) - 1)]
    per_sample = 2 * sum(macs) * 3 - 2 * macs[0]
    return float(per_sample) * n_samples
