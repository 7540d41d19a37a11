"""Permutation alignment of independently trained members (weight matching, as in Git Re-Basin).

Hidden units of an MLP or ConvNet can be permuted without changing the function; members trained from different
seeds are permuted copies of each other's solutions, so their weight average is meaningless. Weight matching
permutes each member's hidden units to best match a reference (a layer-wise linear assignment, iterated until no
layer improves), which puts the whole zoo in one basin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from scipy.optimize import linear_sum_assignment

from workbench.core.io import save_tensors
from workbench.core.params import ParamSpec

__all__ = ["PermutationSpec", "permutation_spec", "apply_permutation", "weight_matching", "align_vectors",
           "ZooAlignment", "align_zoo"]


@dataclass(frozen=True)
class PermutationSpec:
    """For every hidden layer (a permutation group): its size and the (tensor name, axis) pairs it permutes."""

    groups: dict[str, tuple[int, tuple[tuple[str, int], ...]]]
    # tensors permuted through a reshaped view: a Linear after flattening a (C, h, w) map takes C blocks of h·w
    # inputs, viewed as (out, C, h·w) so that its axis 1 is the conv channel the group permutes
    views: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def view(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors with the views applied (the rest as they are)."""
        return {k: (v.reshape(self.views[k]) if k in self.views else v) for k, v in params.items()}

    def names(self) -> set[str]:
        """Every tensor name touched by some permutation."""
        return {n for _, axes in self.groups.values() for n, _ in axes}


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """Permutation groups of a chain of Linear/Conv layers (p-diff's MLP-3 and ConvNet-3, any width/depth).

    The output units of every layer but the last form a group: they permute the layer's weight (axis 0), its bias,
    and the next layer's weight (axis 1). ReLU, pooling, flatten and global average pooling commute with it."""
    layers = [(name, m) for name, m in model.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    allowed = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ReLU, nn.Flatten, nn.MaxPool1d, nn.MaxPool2d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Identity, nn.Sequential)
    odd = [type(m).__name__ for m in model.modules() if not isinstance(m, allowed)]
    if odd:
        raise ValueError(f"permutation alignment supports chains of Linear/Conv with ReLU/pooling; found {odd[:3]} "
                         "(BatchNorm, attention and residual blocks need their own permutation spec)")
    if len(layers) < 2:
        raise ValueError("a model with fewer than two weight layers has no hidden units to permute")
    groups, views = {}, {}
    for (name, m), (next_name, nxt) in zip(layers[:-1], layers[1:]):
        axes = [(f"{name}.weight", 0), (f"{next_name}.weight", 1)]
        if m.bias is not None:
            axes.insert(1, (f"{name}.bias", 0))
        out = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        nxt_in = nxt.in_features if isinstance(nxt, nn.Linear) else nxt.in_channels
        if out != nxt_in:
            if isinstance(m, (nn.Conv1d, nn.Conv2d)) and isinstance(nxt, nn.Linear) and nxt_in % out == 0:
                # a flattened (C, h, w) map: channel c owns inputs c·hw … (c+1)·hw − 1 of the Linear
                views[f"{next_name}.weight"] = (nxt.out_features, out, nxt_in // out)
            else:
                raise ValueError(f"{name} has {out} outputs but {next_name} takes {nxt_in} inputs; alignment needs "
                                 "global pooling, a flatten of its channels, or nothing between them")
        groups[f"P_{name}"] = (out, tuple(axes))
    return PermutationSpec(groups, views)


def apply_permutation(ps: PermutationSpec, perms: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
    """Permute the tensors of one model (index tensors per group; missing groups stay as they are)."""
    out = ps.view(params)
    for g, (_, axes) in ps.groups.items():
        if g not in perms:
            continue
        for name, axis in axes:
            out[name] = torch.index_select(out[name], axis, perms[g])
    return {k: v.reshape(params[k].shape) for k, v in out.items()}


def _except(ps: PermutationSpec, perms: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor], skip: str,
            name: str, axis: int) -> torch.Tensor:
    """``params[name]`` with every permutation applied except group ``skip`` along ``axis``."""
    w = params[name]
    for g, (_, axes) in ps.groups.items():
        if g == skip:
            continue
        for n, ax in axes:
            if n == name:
                w = torch.index_select(w, ax, perms[g])
    return w


def weight_matching(ps: PermutationSpec, reference: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
                    *, max_iter: int = 100, seed: int = 0) -> dict[str, torch.Tensor]:
    """Permutations that make ``params`` best match ``reference`` (maximise Σ ⟨W_ref, P W⟩ layer by layer)."""

    perms = {g: torch.arange(n) for g, (n, _) in ps.groups.items()}
    rng = np.random.default_rng(seed)
    order = list(ps.groups)
    ref = {k: v.double() for k, v in ps.view(reference).items()}
    par = {k: v.double() for k, v in ps.view(params).items()}
    for _ in range(max_iter):
        progress = False
        for g in rng.permutation(order):
            n, axes = ps.groups[g]
            score = torch.zeros(n, n, dtype=torch.float64)
            for name, axis in axes:
                wa = torch.movedim(ref[name], axis, 0).reshape(n, -1)
                wb = torch.movedim(_except(ps, perms, par, g, name, axis), axis, 0).reshape(n, -1)
                score += wa @ wb.T
            _, col = linear_sum_assignment(score.numpy(), maximize=True)
            old = float(score[torch.arange(n), perms[g]].sum())
            new = float(score[torch.arange(n), torch.as_tensor(col)].sum())
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[g] = torch.as_tensor(col, dtype=torch.long)
                progress = True
        if not progress:
            break
    return perms


def align_vectors(vectors: torch.Tensor, spec: ParamSpec, model: nn.Module, *, reference: int = 0,
                  max_iter: int = 100, seed: int = 0) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Align every member (rows of ``vectors``, whole models per ``spec``) to member ``reference``.

    Returns the aligned vectors and each member's permutations (the reference's are the identity)."""
    ps = permutation_spec(model)
    missing = ps.names() - set(spec.names)
    if missing:
        raise ValueError(f"alignment permutes {sorted(missing)[:3]}, which the ParamSpec does not generate; "
                         "align whole models (select '*')")
    ref = spec.unflatten(vectors[reference])
    out, all_perms = [], []
    for i in range(len(vectors)):
        params = spec.unflatten(vectors[i])
        perms = weight_matching(ps, ref, params, max_iter=max_iter, seed=seed) if i != reference else \
            {g: torch.arange(n) for g, (n, _) in ps.groups.items()}
        aligned = apply_permutation(ps, perms, params)
        out.append(torch.cat([aligned[n].reshape(-1) for n in spec.names]))
        all_perms.append(perms)
    return torch.stack(out), all_perms


@dataclass(frozen=True)
class ZooAlignment:
    """How a zoo was aligned: the reference member and every member's permutations (saved with a generator)."""

    reference: int
    perms: list[dict[str, torch.Tensor]]

    def save(self, directory, name: str = "alignment") -> None:
        """Permutation indices as int64 safetensors (no pickle)."""
        tensors = {f"{i}/{g}": p for i, perms in enumerate(self.perms) for g, p in perms.items()}
        save_tensors(Path(directory) / f"{name}.safetensors", tensors,
                     metadata={"reference": str(self.reference), "n_members": str(len(self.perms))})

    @classmethod
    def load(cls, directory, name: str = "alignment") -> "ZooAlignment":
        """Inverse of :meth:`save`."""
        path = Path(directory) / f"{name}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            n = int(meta.get("n_members", 0))
            perms: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
            for key in f.keys():
                i, g = key.split("/", 1)
                perms[int(i)][g] = f.get_tensor(key)
        return cls(int(meta.get("reference", 0)), perms)

    def apply(self, vectors: torch.Tensor, spec: ParamSpec, model: nn.Module) -> torch.Tensor:
        """Re-apply the stored permutations to the same members (no matching)."""
        if len(vectors) != len(self.perms):
            raise ValueError(f"the alignment holds {len(self.perms)} members but {len(vectors)} vectors were given")
        ps = permutation_spec(model)
        rows = []
        for v, perms in zip(vectors, self.perms):
            p = apply_permutation(ps, perms, spec.unflatten(v))
            rows.append(torch.cat([p[n].reshape(-1) for n in spec.names]))
        return torch.stack(rows)


def align_zoo(vectors: torch.Tensor, spec: ParamSpec, model: nn.Module, *, reference: int = 0,
              max_iter: int = 100, seed: int = 0) -> tuple[torch.Tensor, ZooAlignment]:
    """:func:`align_vectors` returning a :class:`ZooAlignment` record."""
    if not 0 <= reference < len(vectors):
        raise ValueError(f"reference member {reference} is outside the zoo (0..{len(vectors) - 1})")
    aligned, perms = align_vectors(vectors, spec, model, reference=reference, max_iter=max_iter, seed=seed)
    return aligned, ZooAlignment(reference, perms)
