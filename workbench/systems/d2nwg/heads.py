"""Linear classifier heads as parameter vectors (the CH setting of D2NWG): logits and accuracies of many heads at
once, the class-prototype head (nearest class mean, no training), a row view (one row per class, the unit the
generator and its dataset encoding are tied to), and SGD fine-tuning from any start.

A head vector is ``ParamSpec`` order of ``nn.Linear(features, ways)``: the weight (ways × features, row-major) then
the bias (ways). Row ``c`` — weight row ``c`` and bias ``c`` — scores class ``c``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["head_logits", "head_accuracy", "heads_to_rows", "rows_to_heads", "prototype_head", "train_head",
           "finetune_curve"]


def _split(vectors: torch.Tensor, ways: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (n, ways, F), biases (n, ways)) of head vectors (n, ways·F + ways)."""
    if vectors.ndim == 1:
        vectors = vectors[None]
    n, p = vectors.shape
    if p % ways or (p // ways) < 2:
        raise ValueError(f"head vectors of length {p} are not nn.Linear(F, {ways}) heads (weight {ways}×F + bias "
                         f"{ways}); check `ways` and the ParamSpec")
    f = p // ways - 1
    return vectors[:, : ways * f].reshape(n, ways, f), vectors[:, ways * f:]


def head_logits(vectors: torch.Tensor, x: torch.Tensor, ways: int) -> torch.Tensor:
    """Logits (n_heads, N, ways) of every head on features ``x`` (N, F)."""
    w, b = _split(vectors.to(x.dtype), ways)
    if w.shape[-1] != x.shape[-1]:
        raise ValueError(f"heads take {w.shape[-1]} features, the inputs have {x.shape[-1]}")
    return torch.einsum("nf,hcf->hnc", x, w) + b[:, None, :]


def head_accuracy(vectors: torch.Tensor, x: torch.Tensor, y: torch.Tensor, ways: int) -> np.ndarray:
    """Accuracy (percent) of every head on (x, y)."""
    with torch.no_grad():
        pred = head_logits(vectors, x, ways).argmax(-1)
    return (100.0 * (pred == y[None]).float().mean(1)).numpy()


def heads_to_rows(vectors: torch.Tensor, ways: int) -> torch.Tensor:
    """Head vectors (n, P) → rows (n, ways, F + 1): row c = [weight row c, bias c]."""
    w, b = _split(vectors, ways)
    return torch.cat([w, b[..., None]], dim=-1)


def rows_to_heads(rows: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`heads_to_rows`: rows (n, ways, F + 1) → head vectors (n, ways·F + ways)."""
    if rows.ndim != 3:
        raise ValueError(f"rows are (heads, ways, features + 1), got shape {tuple(rows.shape)}")
    return torch.cat([rows[..., :-1].reshape(len(rows), -1), rows[..., -1]], dim=1)


def prototype_head(x: torch.Tensor, y: torch.Tensor, ways: int) -> torch.Tensor:
    """The nearest-class-mean classifier as a linear head: w_c = μ_c, b_c = −‖μ_c‖²/2 (argmax = nearest mean in
    Euclidean distance). No training; every class needs at least one example."""
    missing = [c for c in range(ways) if not (y == c).any()]
    if missing:
        raise ValueError(f"the support set has no example of classes {missing}: a prototype needs one per class")
    mu = torch.stack([x[y == c].mean(0) for c in range(ways)])
    return torch.cat([mu.reshape(-1), -0.5 * (mu ** 2).sum(1)])


def train_head(x: torch.Tensor, y: torch.Tensor, ways: int, *, steps: int = 100, lr: float = 1e-2,
               weight_decay: float = 1e-3, seed: int = 0, start: torch.Tensor | None = None) -> torch.Tensor:
    """A linear probe fitted with full-batch Adam on (x, y) (the few-shot baseline on a support set)."""
    g = torch.Generator().manual_seed(seed)
    f = x.shape[1]
    if start is None:
        bound = 1.0 / f ** 0.5  # nn.Linear's default init
        start = torch.cat([(torch.rand(ways * f, generator=g) * 2 - 1) * bound,
                           (torch.rand(ways, generator=g) * 2 - 1) * bound])
    v = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(head_logits(v, x, ways)[0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return v.detach()


def finetune_curve(start: torch.Tensor, train: tuple[torch.Tensor, torch.Tensor],
                   test: tuple[torch.Tensor, torch.Tensor], ways: int, *, steps: Sequence[int] = (0, 1, 5, 25, 100),
                   lr: float = 0.01, batch_size: int = 32, seed: int = 0, every_step: bool = False,
                   optimizer: str = "sgd") -> dict[int, float]:
    """Test accuracy (percent) after each number of steps (minibatches of the training split) from ``start``:
    plain SGD, or Adam with ``optimizer="adam"``; with ``every_step`` the accuracy after every step up to
    ``max(steps)``. The minibatch stream is seeded, so every start sees the same batches."""
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer={optimizer!r}: use 'sgd' or 'adam'")
    x, y = train
    xt, yt = test
    g = torch.Generator().manual_seed(seed)
    v = start.detach().clone().float().requires_grad_(True)
    opt = torch.optim.SGD([v], lr=lr) if optimizer == "sgd" else torch.optim.Adam([v], lr=lr)
    want = set(range(max(steps) + 1)) if every_step else set(steps)
    out = {0: float(head_accuracy(v.detach(), xt, yt, ways)[0])} if 0 in want else {}
    for step in range(1, max(steps) + 1):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)
        loss = F.cross_entropy(head_logits(v, x[idx], ways)[0], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in want:
            out[step] = float(head_accuracy(v.detach(), xt, yt, ways)[0])
    return out
