"""What D2NWG's generated heads are compared with on a dataset it never saw — every start that needs no diffusion:

* ``random`` — ``nn.Linear``'s default initialisation;
* ``retrieval`` — the head of the nearest seen dataset by encoding (D2NWG's model retrieval; rows kept in that
  dataset's class order) and ``retrieval_matched`` — the same head with its rows re-assigned to the support's
  classes by per-class encoding similarity (Hungarian), a stronger variant the paper does not use;
* ``prototype`` — the nearest-class-mean head built from the support features, no training;
* ``fewshot_probe`` — a linear probe trained on the same support set;
* ``regressor`` — ridge regression from a class's encoding to its head row, fitted on the seen datasets (the
  reviewers' "parameter predictor on combined datasets", with the same class-ordered encoding and row structure
  as the generator), and ``regressor_flat`` — ridge from the whole encoding to the whole head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from scipy.optimize import linear_sum_assignment

from workbench.systems.d2nwg.generator import D2NWG
from workbench.systems.d2nwg.heads import heads_to_rows, prototype_head, rows_to_heads, train_head
from workbench.systems.d2nwg.zoo import DatasetZoo, SupportSet

__all__ = ["random_heads", "retrieved_head", "EncodingRegressor", "fit_regressor", "fewshot_probe", "prototype"]


def random_heads(n: int, in_features: int, ways: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` heads as ``nn.Linear(in_features, ways)`` initialises them (seeded)."""
    torch.manual_seed(seed)
    out = []
    for _ in range(n):
        m = nn.Linear(in_features, ways)
        out.append(torch.cat([m.weight.detach().reshape(-1), m.bias.detach()]))
    return torch.stack(out)


def retrieved_head(gen: D2NWG, zoo: DatasetZoo, support: SupportSet, *, match_rows: bool = False) -> tuple[
        torch.Tensor, str]:
    """The last checkpoint of the nearest seen dataset (by mean encoding); with ``match_rows`` its rows permuted
    onto the support's classes by maximal total cosine similarity of the per-class encodings."""
    name = gen.nearest_seen(support)[0]
    head = zoo.vectors(name)[-1]
    if not match_rows:
        return head, name
    e = torch.nn.functional.normalize(gen.encode(support), dim=-1)
    s = torch.nn.functional.normalize(gen.seen_encodings[gen.seen.index(name)], dim=-1)
    _, cols = linear_sum_assignment(-(e @ s.T).numpy())   # class c of the support ← row cols[c] of the seen head
    rows = heads_to_rows(head[None], zoo.ways)[0]
    return rows_to_heads(rows[torch.as_tensor(cols)][None])[0], name


def prototype(support: SupportSet) -> torch.Tensor:
    """The nearest-class-mean head of the support set."""
    return prototype_head(support.features, support.labels, support.ways)


def fewshot_probe(support: SupportSet, *, steps: int = 100, seed: int = 0) -> torch.Tensor:
    """A linear probe trained (full-batch Adam, weight decay) on the support set only."""
    return train_head(support.features, support.labels, support.ways, steps=steps, seed=seed)


@dataclass
class EncodingRegressor:
    """Ridge maps from dataset encodings to heads (row-wise: class encoding → row; flat: encoding → head)."""

    row_w: torch.Tensor
    flat_w: torch.Tensor
    ways: int

    @staticmethod
    def _design(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.ones(len(x), 1)], dim=1)

    def predict(self, encoding: torch.Tensor, flat: bool = False) -> torch.Tensor:
        """A head vector from a class-ordered encoding (ways, D)."""
        if flat:
            return (self._design(encoding.reshape(1, -1)) @ self.flat_w)[0]
        return rows_to_heads((self._design(encoding) @ self.row_w)[None])[0]


def _ridge(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Closed-form ridge with an unpenalised intercept column (the last column of x)."""
    x64, y64 = x.double(), y.double()
    reg = alpha * torch.eye(x.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0.0
    return torch.linalg.solve(x64.T @ x64 + reg, x64.T @ y64).float()


def fit_regressor(gen: D2NWG, zoo: DatasetZoo, *, shots: int, draws: int = 8, alpha: float = 1.0,
                  seed: int = 0) -> EncodingRegressor:
    """Fit both ridge regressors on the generator's seen datasets: ``draws`` support draws of ``shots`` per class
    each, paired with the dataset's mean head (its checkpoints averaged: one target per dataset and draw)."""
    xs, ys = [], []
    for i, name in enumerate(gen.seen):
        target = zoo.vectors(name).mean(0)
        for j in range(draws):
            xs.append(gen.encode(zoo.support(name, shots, seed=seed + 7919 * j + i)))
            ys.append(target)
    enc, heads = torch.stack(xs), torch.stack(ys)                  # (M, ways, D), (M, P)
    rows = heads_to_rows(heads, zoo.ways)                          # (M, ways, F + 1)
    d = EncodingRegressor._design
    row_w = _ridge(d(enc.reshape(-1, enc.shape[-1])), rows.reshape(-1, rows.shape[-1]), alpha)
    flat_w = _ridge(d(enc.reshape(len(enc), -1)), heads, alpha)
    return EncodingRegressor(row_w=row_w, flat_w=flat_w, ways=zoo.ways)
