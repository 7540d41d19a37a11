"""Which parameters are generated (ParamSpec): selection by glob/regex, exact flatten/unflatten."""

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

from workbench.core.io import atomic_write_text, read_json

__all__ = ["ParamSpec", "ParamSpecError", "check_finite", "last_modules"]


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
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "ParamSpec":
        """Read from JSON (a missing, corrupt or inconsistent file is a clear error naming it)."""
        try:
            return cls.from_dict(read_json(path))
        except ParamSpecError as e:
            raise ParamSpecError(f"{path}: {e}; the file is damaged — restore it or re-collect") from None
