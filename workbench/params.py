"""Which parameters are generated (ParamSpec), exact flatten/unflatten, and invertible normalisers."""

from __future__ import annotations

import fnmatch
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

__all__ = [
    "ParamSpec",
    "ParamSpecError",
    "check_finite",
    "last_modules",
    "Normaliser",
    "PositionNormaliser",
    "LayerNormaliser",
    "TaskNormaliser",
    "IdentityNormaliser",
    "make_normaliser",
    "load_normaliser",
]


class ParamSpecError(ValueError):
    """A parameter selection or vector does not fit the model."""


def check_finite(t: torch.Tensor, what: str) -> None:
    """Raise a clear error if ``t`` holds NaN or inf."""
    if t.is_floating_point() and not torch.isfinite(t).all():
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ParamSpecError(
            f"{what} holds {n_nan} NaN and {n_inf} inf values; the weights are unusable. Re-train or re-sample "
            "(a diverged run or a bad normaliser usually causes this)."
        )


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def _check_patterns(patterns: object, what: str) -> list[str]:
    """A list of glob / ``re:`` patterns, checked: a bare string or a bad regex is a clear error."""
    if isinstance(patterns, (str, bytes)):
        raise ParamSpecError(f"{what} must be a list of patterns, got the string {patterns!r}; write [{patterns!r}]")
    try:
        patterns = list(patterns)  # type: ignore[arg-type]
    except TypeError:
        raise ParamSpecError(f"{what} must be a list of patterns, got {type(patterns).__name__}") from None
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ParamSpecError(f"{what} holds {p!r}; every pattern is a non-empty string like 'fc2.*' or 're:bn\\d'")
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as e:
                raise ParamSpecError(f"{what}: {p!r} is not a valid regular expression ({e})") from None
    return patterns


def last_modules(model: nn.Module, module_type: type | tuple[type, ...], n: int = 1,
                 tensors: Sequence[str] = ("weight", "bias")) -> list[str]:
    """Patterns selecting ``tensors`` of the last ``n`` modules of a type (e.g. the last two BatchNorm layers)."""
    names = [name for name, m in model.named_modules() if isinstance(m, module_type)]
    if len(names) < n:
        raise ParamSpecError(f"model has {len(names)} modules of type {module_type}, fewer than the {n} requested")
    return [f"{name}.{t}" for name in names[-n:] for t in tensors]


def _dim(d: object) -> int:
    if isinstance(d, bool) or not isinstance(d, (int,)) and not (hasattr(d, "__index__")):
        raise TypeError(d)
    d = int(d)  # type: ignore[arg-type]
    if d < 0:
        raise ParamSpecError(f"a tensor dimension cannot be negative (got {d})")
    return d


@dataclass(frozen=True)
class ParamSpec:
    """An ordered selection of state-dict tensors with their shapes; flatten/unflatten are exact inverses."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        names = self.names if isinstance(self.names, (str, bytes)) else tuple(self.names)
        if isinstance(names, (str, bytes)) or not all(isinstance(n, str) and n for n in names):
            raise ParamSpecError(f"a ParamSpec's names are a list of non-empty strings, got {self.names!r}")
        object.__setattr__(self, "names", names)
        try:
            shapes = tuple(tuple(_dim(d) for d in s) for s in self.shapes)
        except TypeError:
            raise ParamSpecError(f"a ParamSpec's shapes are lists of non-negative integers, got {self.shapes!r}") from None
        object.__setattr__(self, "shapes", shapes)
        if not self.names:
            raise ParamSpecError("a ParamSpec needs at least one tensor")
        if len(self.names) != len(self.shapes):
            raise ParamSpecError(f"{len(self.names)} names but {len(self.shapes)} shapes")
        if len(set(self.names)) != len(self.names):
            raise ParamSpecError("a ParamSpec lists a tensor twice")

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def select(cls, state: nn.Module | Mapping[str, torch.Tensor], include: Iterable[str] = ("*",),
               exclude: Iterable[str] = (), floating_only: bool = True) -> "ParamSpec":
        """Select tensors by glob (``fc2.*``) or regex (``re:^layer4\\.1\\.bn``); order is the state-dict order."""
        sd = state.state_dict() if isinstance(state, nn.Module) else state
        include, exclude = _check_patterns(include, "include"), _check_patterns(exclude, "exclude")
        if not include:
            raise ParamSpecError("include must be a non-empty list of patterns, e.g. ['fc2.*', 'fc3.*']")
        names = [
            k for k, v in sd.items()
            if any(_matches(k, p) for p in include) and not any(_matches(k, p) for p in exclude)
            and (not floating_only or v.is_floating_point())
        ]
        if not names:
            sample = ", ".join(list(sd)[:8])
            raise ParamSpecError(
                f"the patterns include={include} exclude={exclude} select no tensor. Available names start with: "
                f"{sample}{', ...' if len(sd) > 8 else ''}. Use globs like 'fc2.*' or regexes like 're:bn\\d'."
            )
        for p in include:
            if not any(_matches(k, p) for k in sd):
                raise ParamSpecError(f"pattern {p!r} matches no tensor of the model; check its spelling")
        return cls(tuple(names), tuple(tuple(sd[k].shape) for k in names))

    # -- geometry ----------------------------------------------------------------------------
    @property
    def numels(self) -> tuple[int, ...]:
        """Element count of each tensor."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def numel(self) -> int:
        """Length of the flat vector."""
        return sum(self.numels)

    def __len__(self) -> int:
        return self.numel

    def slices(self) -> dict[str, slice]:
        """Where each tensor lives in the flat vector."""
        out, o = {}, 0
        for n, k in zip(self.names, self.numels):
            out[n] = slice(o, o + k)
            o += k
        return out

    def layer_ids(self) -> torch.Tensor:
        """For each vector position, the index of the tensor it belongs to."""
        return torch.repeat_interleave(torch.arange(len(self.names)), torch.tensor(self.numels))

    # -- conversion ----------------------------------------------------------------------------
    def _check(self, state: Mapping[str, torch.Tensor], batched: bool) -> None:
        missing = [n for n in self.names if n not in state]
        if missing:
            raise ParamSpecError(f"state dict lacks {len(missing)} tensors of the spec, e.g. {missing[:3]}; "
                                 "was it saved from a different architecture?")
        for n, s in zip(self.names, self.shapes):
            got = tuple(state[n].shape[1:] if batched else state[n].shape)
            if got != s:
                raise ParamSpecError(f"tensor {n!r} has shape {got}, the spec expects {s}; the model and the spec "
                                     "disagree (different architecture or input size?)")

    def flatten(self, state: nn.Module | Mapping[str, torch.Tensor], check: bool = True) -> torch.Tensor:
        """Concatenate the selected tensors into one float32 vector (P,)."""
        sd = state.state_dict() if isinstance(state, nn.Module) else state
        self._check(sd, batched=False)
        vec = torch.cat([sd[n].detach().reshape(-1).float().cpu() for n in self.names])
        if check:
            check_finite(vec, "the flattened parameters")
        return vec

    def flatten_batch(self, states: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]],
                      check: bool = True) -> torch.Tensor:
        """(N, P) matrix from a list of state dicts or from one dict of stacked tensors (N, *shape)."""
        if isinstance(states, Mapping):
            self._check(states, batched=True)
            n = states[self.names[0]].shape[0]
            mat = torch.cat([states[k].detach().reshape(n, -1).float().cpu() for k in self.names], dim=1)
        else:
            mat = torch.stack([self.flatten(s, check=False) for s in states])
        if check:
            check_finite(mat, "the flattened parameters")
        return mat

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inverse of flatten: (P,) → {name: shape} or (N, P) → {name: (N, *shape)}."""
        if vector.ndim not in (1, 2) or vector.shape[-1] != self.numel:
            raise ParamSpecError(f"vector of shape {tuple(vector.shape)} does not fit this spec: expected (P,) or "
                                 f"(N, P) with P = {self.numel}")
        lead = vector.shape[:-1]
        out = {}
        for n, s, sl in zip(self.names, self.shapes, self.slices().values()):
            out[n] = vector[..., sl].reshape(tuple(lead) + s)
        return out

    def load_into(self, model: nn.Module, vector: torch.Tensor, check: bool = True) -> nn.Module:
        """Write ``vector`` into ``model``'s selected tensors in place (the rest stays as it is); returns model."""
        if vector.ndim != 1:
            raise ParamSpecError(f"load_into takes one vector (P,), got shape {tuple(vector.shape)}")
        if check:
            check_finite(vector, "the vector to load")
        sd = model.state_dict()
        self._check(sd, batched=False)
        with torch.no_grad():
            for n, t in self.unflatten(vector).items():
                sd[n].copy_(t.to(sd[n].dtype))
        return model

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain-JSON view."""
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes], "numel": self.numel}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ParamSpec":
        """Inverse of :meth:`to_dict` (checked: names and shapes present, as long as each other, shapes >= 0)."""
        if not isinstance(d, Mapping) or "names" not in d or "shapes" not in d:
            raise ParamSpecError(f"a ParamSpec dict needs 'names' and 'shapes', got {str(d)[:120]}")
        if not isinstance(d["shapes"], (list, tuple)) or not all(isinstance(s, (list, tuple)) for s in d["shapes"]):
            raise ParamSpecError(f"a ParamSpec's shapes are lists of integers, got {str(d['shapes'])[:120]}")
        spec = cls(tuple(d["names"]), tuple(tuple(s) for s in d["shapes"]))
        if "numel" in d and d["numel"] != spec.numel:
            raise ParamSpecError(f"the spec says numel={d['numel']} but its shapes add up to {spec.numel}")
        return spec

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        from .atomic_io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "ParamSpec":
        """Read from JSON (a missing, corrupt or inconsistent file is a clear error naming it)."""
        from .atomic_io import read_json

        try:
            return cls.from_dict(read_json(path))
        except ParamSpecError as e:
            raise ParamSpecError(f"{path}: {e}; the file is damaged — restore it or re-collect") from None


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
        from safetensors.torch import save_file

        from .atomic_io import atomic_write_text, atomic_path

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

    from .atomic_io import load_tensors, read_json

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
