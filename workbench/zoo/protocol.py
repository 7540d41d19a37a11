"""The zoo interface: what every zoo offers a generator, an evaluation or an analysis.

A zoo is a stored collection of *members* (parameter vectors for one :class:`~workbench.core.params.ParamSpec`)
grouped by the *condition* they were trained for: a task (Cond P-Diff's LoRA zoos), a style, a dataset (D2NWG), a
code (RPG's task codes), or nothing at all (p-diff's dense and seeds zoos, which have one condition, ``kind="none"``).
Generators take their conditions from here, never from a particular zoo family, and evaluations read members, data
and stored accuracies only through these methods.

Implementations: :class:`workbench.zoo.Zoo` (dense checkpoints, independent seeds), the LoRA zoos of
:mod:`workbench.zoo.lora` (tasks over images or text), the style zoo and the style-continuous view of
:mod:`workbench.systems.cond_pdiff.style`, and any object of your own with these members (``check_zoo`` says which
are missing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn as nn

from workbench.core.params import ParamSpec
from workbench.data import TaskData

__all__ = ["Condition", "ParameterZoo", "CONDITION_KINDS", "check_zoo", "condition_names"]

CONDITION_KINDS = ("none", "task", "style", "dataset", "code")


@dataclass(frozen=True)
class Condition:
    """What a group of members was trained for. ``name`` identifies it in its zoo; the other fields are what a
    conditional generator may encode: a text (``description`` + ``examples``), an ``image`` (a style's reference),
    or a ``code`` (a task code or any vector). ``seen`` is False for conditions held out from training."""

    name: str
    kind: str = "none"
    seen: bool = True
    description: str = ""
    examples: tuple[str, ...] = ()
    code: tuple[float, ...] | None = None
    image: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"a condition's name is a str, got {type(self.name).__name__}")
        if self.kind not in CONDITION_KINDS:
            raise ValueError(f"condition kind {self.kind!r}: use one of {CONDITION_KINDS}")
        object.__setattr__(self, "examples", tuple(self.examples))
        if self.code is not None:
            object.__setattr__(self, "code", tuple(float(x) for x in self.code))

    def text(self, with_examples: bool = True) -> str:
        """The condition text: the description, optionally followed by the examples."""
        examples = [e for e in self.examples if e.strip()] if with_examples else []
        return self.description + (" Examples: " + " ".join(examples) if examples else "")

    def to_dict(self) -> dict:
        """Plain-JSON view (the image, when there is one, is stored by the zoo, not here)."""
        return {"name": self.name, "kind": self.kind, "seen": self.seen, "description": self.description,
                "examples": list(self.examples), "code": None if self.code is None else list(self.code)}

    @classmethod
    def from_dict(cls, d: dict) -> "Condition":
        """Inverse of :meth:`to_dict` (unknown keys, e.g. a task's ``classes``, are ignored)."""
        return cls(name=d["name"], kind=d.get("kind", "task"), seen=bool(d.get("seen", True)),
                   description=d.get("description", ""), examples=tuple(d.get("examples", ())), code=d.get("code"))


@runtime_checkable
class ParameterZoo(Protocol):
    """The interface every zoo implements.

    ``condition`` arguments take a condition name, a list of names, or None: the seen conditions, in order (for an
    unconditional zoo, its one condition, i.e. every member)."""

    @property
    def spec(self) -> ParamSpec:
        """The generated tensors (names, shapes, order) of every member vector."""

    @property
    def conditions(self) -> list[Condition]:
        """Every condition this zoo knows: the seen ones (with members to train on) first, then held-out ones."""

    def model(self) -> nn.Module:
        """The network a member vector is loaded into (everything outside the spec fixed)."""

    def vectors(self, condition: str | Sequence[str] | None = None) -> torch.Tensor:
        """(N, P) member vectors of the given conditions, condition after condition."""

    def data(self, condition: str | None = None) -> TaskData:
        """The train/test data members of this condition are evaluated on."""

    def accuracies(self, condition: str | None = None, split: str = "test") -> np.ndarray:
        """Stored accuracies (percent) of the condition's members, in :meth:`vectors` order."""


_REQUIRED = ("spec", "conditions", "model", "vectors", "data", "accuracies")


def check_zoo(zoo: object, what: str = "zoo") -> None:
    """Raise a TypeError naming the members of :class:`ParameterZoo` that ``zoo`` lacks."""
    missing = [m for m in _REQUIRED if not hasattr(type(zoo), m) and not hasattr(zoo, m)]
    if missing:
        raise TypeError(f"{what} of type {type(zoo).__name__} does not implement the zoo interface "
                        f"(workbench.zoo.protocol.ParameterZoo): missing {missing}")


def condition_names(zoo: ParameterZoo, condition: str | Sequence[str] | None = None) -> list[str]:
    """Normalise a ``condition`` argument to a list of names known to ``zoo`` (None → the seen conditions);
    an unknown name is a ValueError listing the known ones."""
    known = [c.name for c in zoo.conditions]
    if condition is None:
        return [c.name for c in zoo.conditions if c.seen]
    names = [condition] if isinstance(condition, str) else list(condition)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; this zoo has {known}")
    return names
