"""A zoo from plain tensors: your member vectors (or trained modules), your network and your data, in memory.

It implements the zoo interface (:class:`~workbench.zoo.protocol.ParameterZoo`), so the generators, the evaluation
table and the analyses take it like a collected :class:`~workbench.zoo.Zoo`. Nothing is written: collect with
:func:`workbench.zoo.collect` (a registered dataset and architecture) when you want storage and resume.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from workbench.core.params import ParamSpec, check_finite
from workbench.data import TaskData, task_data_from_tensors
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.zoo.protocol import Condition, condition_names

__all__ = ["TensorZoo"]


class TensorZoo:
    """Members ``vectors`` (N, P) of ``spec`` on top of ``model``, evaluated on ``data``.

    ``data``: a :class:`~workbench.data.TaskData`, or ``(x, y)`` tensors split with the built-in seeded split.
    ``accuracies``: the members' stored test accuracies in percent (computed here when not given).
    ``finetune_lr``: the learning rate of the fine-tuned baseline (the lr your members were trained with);
    ``frozen_eval``: fine-tune with BatchNorm in eval mode (when your members were trained that way)."""

    def __init__(self, vectors: torch.Tensor, model: nn.Module, spec: ParamSpec, data: TaskData | tuple, *,
                 name: str = "tensors", accuracies: Sequence[float] | None = None, seed: int = 0,
                 finetune_lr: float = 0.01, frozen_eval: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (the network members load into), got {type(model).__name__}")
        if not isinstance(spec, ParamSpec):
            raise TypeError(f"spec must be a workbench ParamSpec (e.g. ParamSpec.select(model)), got "
                            f"{type(spec).__name__}")
        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        if vectors.ndim != 2 or vectors.shape[1] != spec.numel:
            raise ValueError(f"vectors must have shape (members, {spec.numel}) for this spec, got "
                             f"{tuple(vectors.shape)}")
        if len(vectors) < 2:
            raise ValueError(f"a zoo needs at least 2 members, got {len(vectors)}")
        check_finite(vectors, f"zoo {name!r} member vectors")
        self.name = name
        self.spec = spec
        self._model = copy.deepcopy(model).cpu().eval()
        spec._check(self._model.state_dict(), batched=False)
        self._vectors = vectors.contiguous()
        self._data = data if isinstance(data, TaskData) else task_data_from_tensors(*data, name=name, seed=seed)
        self.finetune_lr = float(finetune_lr)
        self.frozen_eval = bool(frozen_eval)
        if accuracies is None:
            ev = MemberEvaluator(self._model, spec, probe=self._data.x_test)
            self._acc = {"test": ev(vectors, self._data.x_test, self._data.y_test).accuracy,
                         "train": ev(vectors, self._data.x_train, self._data.y_train).accuracy}
        else:
            acc = np.asarray(accuracies, dtype=float)
            if acc.shape != (len(vectors),):
                raise ValueError(f"accuracies must hold one value per member ({len(vectors)}), got shape {acc.shape}")
            self._acc = {"test": acc}

    @classmethod
    def from_models(cls, models: Sequence[nn.Module], data: TaskData | tuple, *, include: Sequence[str] = ("*",),
                    exclude: Sequence[str] = (), **kwargs) -> TensorZoo:
        """The zoo of trained modules of one architecture: the tensors matching ``include`` / ``exclude`` are the
        members' vectors; everything else is taken from the first module."""
        models = list(models)
        if len(models) < 2:
            raise ValueError(f"a zoo needs at least 2 trained models, got {len(models)}")
        spec = ParamSpec.select(models[0], include, exclude)
        vectors = torch.stack([spec.flatten(m) for m in models])
        return cls(vectors, models[0], spec, data, **kwargs)

    def __len__(self) -> int:
        return len(self._vectors)

    @property
    def conditions(self) -> list[Condition]:
        """One condition (the zoo's name): every member was trained for the same task."""
        return [Condition(name=self.name, kind="none")]

    def model(self, member: int | None = None, vector: torch.Tensor | None = None) -> nn.Module:
        """A copy of the network, with member ``member`` (row) or an explicit vector loaded."""
        m = copy.deepcopy(self._model)
        if member is not None:
            vector = self._vectors[member]
        if vector is not None:
            self.spec.load_into(m, vector)
        return m.eval()

    def vectors(self, condition: str | Sequence[str] | None = None) -> torch.Tensor:
        """(N, P) member vectors."""
        condition_names(self, condition)
        return self._vectors

    def data(self, condition: str | None = None) -> TaskData:
        """The data the members are evaluated on."""
        condition_names(self, condition)
        return self._data

    def accuracies(self, condition: str | None = None, split: str = "test") -> np.ndarray:
        """Member accuracies (percent) on ``split``."""
        condition_names(self, condition)
        if split not in self._acc:
            raise ValueError(f"no {split!r} accuracies: this zoo has {sorted(self._acc)}")
        return self._acc[split]

    def describe(self) -> dict:
        """Members, parameters and accuracy range."""
        a = self._acc["test"]
        return {"name": self.name, "members": len(self), "params": self.spec.numel,
                "test_acc_min": float(a.min()), "test_acc_mean": float(a.mean()), "test_acc_max": float(a.max()),
                "distinct_test_acc": int(len(np.unique(np.round(a, 6))))}
