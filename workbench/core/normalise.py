"""Invertible normalisers of parameter vectors (per position, per layer, per task), saved with their statistics."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from workbench.core.io import atomic_path, atomic_write_text, load_tensors, read_json
from workbench.core.params import ParamSpec, ParamSpecError, check_finite

__all__ = ["Normaliser", "PositionNormaliser", "LayerNormaliser", "TaskNormaliser", "IdentityNormaliser", "make_normaliser", "load_normaliser"]


# ---------------------------------------------------------------------------------------------
# Normalisers: fit statistics on a zoo (N, P), transform, inverse-transform. Statistics are kept in
# float64 so that inverse(transform(x)) returns x to float32 rounding.
# ---------------------------------------------------------------------------------------------

class Normaliser:
    """Base class: invertible, fitted statistics stored with the generator."""

    kind = "base"

    def fit(self, x: torch.Tensor, groups: torch.Tensor | None = None) -> "Normaliser":
        """Fit statistics on an (N, P) matrix (``groups``: per-row task ids, used by per-task normalisation)."""
        raise NotImplementedError

    def transform(self, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise an (N, P) matrix."""
        mean, std = self._stats(x, groups)
        return ((x.double() - mean) / std).to(x.dtype)

    def inverse(self, z: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Undo :meth:`transform`."""
        mean, std = self._stats(z, groups)
        return (z.double() * std + mean).to(z.dtype)

    def _stats(self, x: torch.Tensor, groups: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to save."""
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-able settings."""
        return {"kind": self.kind}

    def save(self, directory: str | Path, prefix: str = "normaliser") -> None:
        """Write ``<prefix>.json`` and ``<prefix>.safetensors`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / f"{prefix}.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.state().items()}, str(tmp))
        atomic_write_text(d / f"{prefix}.json", json.dumps(self.config(), indent=2))


def _safe_std(x: torch.Tensor, dim: int | tuple[int, ...], eps: float) -> torch.Tensor:
    # Positions that never vary (e.g. weights of a dead ReLU unit) still map to 0 and back to their mean exactly,
    # but their std is set to the median std of the varying positions, not to 1: a generator's error on them then
    # stays on the zoo's own scale instead of being blown up to unit size in weight space.
    std = x.std(dim=dim, unbiased=False, keepdim=False) if x.shape[0] > 1 else torch.zeros_like(x[0])
    varying = std > eps
    fill = std[varying].median() if varying.any() else torch.tensor(1.0, dtype=std.dtype)
    return torch.where(varying, std, fill)


class IdentityNormaliser(Normaliser):
    """No normalisation (the ablation baseline)."""

    kind = "none"

    def fit(self, x, groups=None):
        return self

    def transform(self, x, groups=None):
        return x.clone()

    def inverse(self, z, groups=None):
        return z.clone()

    def state(self):
        return {"_": torch.zeros(1)}


class PositionNormaliser(Normaliser):
    """z-score every vector position with its own mean and std over the zoo."""

    kind = "position"

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, x, groups=None):
        check_finite(x, "the zoo matrix")
        x = x.double()
        self.mean, self.std = x.mean(0), _safe_std(x, 0, self.eps)
        return self

    def _stats(self, x, groups):
        if self.mean is None:
            raise RuntimeError("normaliser used before fit()")
        if x.shape[-1] != self.mean.numel():
            raise ParamSpecError(f"normaliser fitted on P={self.mean.numel()} but got vectors of length {x.shape[-1]}")
        return self.mean, self.std

    def state(self):
        return {"mean": self.mean, "std": self.std}

    def config(self):
        return {"kind": self.kind, "eps": self.eps}


class LayerNormaliser(PositionNormaliser):
    """z-score each tensor of the spec with one mean/std (keeps relative structure inside a layer)."""

    kind = "layer"

    def __init__(self, layer_ids: torch.Tensor, eps: float = 1e-12) -> None:
        super().__init__(eps)
        self.layer_ids = torch.as_tensor(layer_ids).long()

    def fit(self, x, groups=None):
        check_finite(x, "the zoo matrix")
        x = x.double()
        n_layers = int(self.layer_ids.max()) + 1
        means, stds = torch.zeros(n_layers, dtype=torch.float64), torch.ones(n_layers, dtype=torch.float64)
        for i in range(n_layers):
            block = x[:, self.layer_ids == i]
            means[i] = block.mean()
            s = block.std(unbiased=False) if block.numel() > 1 else torch.tensor(1.0, dtype=torch.float64)
            stds[i] = s if s > self.eps else 1.0
        self.mean, self.std = means[self.layer_ids], stds[self.layer_ids]
        return self

    def state(self):
        return {"mean": self.mean, "std": self.std, "layer_ids": self.layer_ids}


class TaskNormaliser(Normaliser):
    """Cond P-Diff's task normalisation: per-position z-score computed separately for each task."""

    kind = "task"

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps
        self.tasks: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None  # (T, P)
        self.std: torch.Tensor | None = None

    def fit(self, x, groups=None):
        if groups is None:
            raise ParamSpecError("task normalisation needs the task id of every row (groups=...)")
        check_finite(x, "the zoo matrix")
        x, groups = x.double(), torch.as_tensor(groups).long()
        self.tasks = torch.unique(groups)
        self.mean = torch.stack([x[groups == t].mean(0) for t in self.tasks])
        self.std = torch.stack([_safe_std(x[groups == t], 0, self.eps) for t in self.tasks])
        return self

    def _stats(self, x, groups):
        if self.mean is None:
            raise RuntimeError("normaliser used before fit()")
        if groups is None:
            raise ParamSpecError("task normalisation needs the task id of every row (groups=...)")
        groups = torch.as_tensor(groups).long().reshape(-1)
        if groups.numel() == 1 and x.ndim == 2 and x.shape[0] > 1:
            groups = groups.expand(x.shape[0])
        idx = torch.searchsorted(self.tasks, groups)
        idx = idx.clamp_max(len(self.tasks) - 1)
        unknown = self.tasks[idx] != groups
        if unknown.any():
            raise ParamSpecError(f"task ids {groups[unknown].unique().tolist()} were not seen when fitting the "
                                 "task normaliser; unseen tasks need statistics from somewhere else")
        return self.mean[idx], self.std[idx]

    def state(self):
        return {"mean": self.mean, "std": self.std, "tasks": self.tasks}

    def config(self):
        return {"kind": self.kind, "eps": self.eps}


def make_normaliser(kind: str, spec: ParamSpec | None = None) -> Normaliser:
    """Build an unfitted normaliser by name: ``none``, ``position``, ``layer``, ``task``."""
    if kind == "none":
        return IdentityNormaliser()
    if kind == "position":
        return PositionNormaliser()
    if kind == "layer":
        if spec is None:
            raise ValueError("layer normalisation needs the ParamSpec (to know the layers)")
        return LayerNormaliser(spec.layer_ids())
    if kind == "task":
        return TaskNormaliser()
    raise ValueError(f"unknown normaliser {kind!r}: choose none, position, layer or task")


def load_normaliser(directory: str | Path, prefix: str = "normaliser") -> Normaliser:
    """Read a normaliser written by :meth:`Normaliser.save`."""


    d = Path(directory)
    cfg = read_json(d / f"{prefix}.json")
    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    if kind == "none":
        return IdentityNormaliser()
    st = load_tensors(d / f"{prefix}.safetensors")
    need = {"position": ("mean", "std"), "layer": ("mean", "std", "layer_ids"), "task": ("mean", "std", "tasks")}
    if kind not in need:
        raise ValueError(f"{d / (prefix + '.json')}: unknown normaliser kind {kind!r} (none, position, layer or task)")
    missing = [k for k in ("eps",) if k not in cfg] + [k for k in need[kind] if k not in st]
    if missing:
        raise ValueError(f"{d / prefix}.json/.safetensors: a {kind!r} normaliser needs {missing}; the files are "
                         "damaged or from another version — re-fit and save the generator")
    if st["mean"].shape != st["std"].shape or not torch.isfinite(st["mean"]).all() or (st["std"] <= 0).any():
        raise ValueError(f"{d / prefix}.safetensors: mean/std are inconsistent (shapes {tuple(st['mean'].shape)} vs "
                         f"{tuple(st['std'].shape)}, or non-finite / non-positive values); re-fit the generator")
    if kind == "none":
        return IdentityNormaliser()
    if kind == "position":
        n = PositionNormaliser(cfg["eps"])
        n.mean, n.std = st["mean"], st["std"]
    elif kind == "layer":
        n = LayerNormaliser(st["layer_ids"], cfg["eps"])
        n.mean, n.std = st["mean"], st["std"]
    elif kind == "task":
        n = TaskNormaliser(cfg["eps"])
        n.mean, n.std, n.tasks = st["mean"], st["std"], st["tasks"]
    else:
        raise ValueError(f"unknown normaliser kind {kind!r} in {d}")
    return n
