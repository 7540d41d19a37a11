"""LoRA zoos (Cond P-Diff): a family of classification tasks over one dataset, a frozen pretrained backbone, and per
task a peft LoRA adapter plus a task head fine-tuned from the same start, whose last steps are kept as dense
checkpoints tagged with their task.

The backbone up to the first adapted module never changes, so its features are computed once per image and cached
on disk; fine-tuning and evaluation run only the tail (for EfficientNet-Lite0 with LoRA on ``conv_head``: conv_head,
BN, pooling and the head). Every task's head has ``n_outputs`` logits so all members share one parameter layout; a
binary task trains its two classes and learns to keep the others low.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from workbench.core.config import NAMED_UNKNOWN_KEYS, JSONConfig
from workbench.core.device import DeviceLike, resolve_device
from workbench.core.io import load_tensors, read_json, save_tensors
from workbench.core.params import ParamSpec
from workbench.data import DatasetInfo, TaskData, load_dataset
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.evaluation.tables import chance, zoo_evaluator
from workbench.zoo.executors import Executor, make_executor
from workbench.zoo.lora.backbone import adapted_tail, backbone_features, build_backbone
from workbench.zoo.lora.engine import (
    LossFn,
    collect_conditions,
    head_name,
    minibatch_cross_entropy,
    read_condition,
    read_timings,
    reset_lora,
    start_zoo,
)
from workbench.zoo.protocol import Condition, condition_names

__all__ = ["Task", "DIGIT_TASKS", "TaskZooConfig", "LoRAZooConfig", "LoRAZoo", "Splits", "feature_splits",
           "collect_task_checkpoints", "collect_lora_zoo", "backbone_features", "build_backbone"]

Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""A task's (x_train, y_train, x_test, y_test)."""


@dataclass(frozen=True)
class Task:
    """A classification task defined on a source dataset's labels.

    ``classes[k]`` lists the source labels that become class ``k``; examples whose label is in no class are left
    out (so "Is it a 3 or an 8?" trains on threes and eights only)."""

    name: str
    description: str
    examples: tuple[str, str]
    classes: tuple[tuple[int, ...], ...]

    def text(self, with_examples: bool = True) -> str:
        """The condition text: the description, optionally followed by the two examples."""
        examples = [e for e in self.examples if e.strip()] if with_examples else []
        return self.description + (" Examples: " + " ".join(examples) if examples else "")

    def relabel(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask of kept examples, their task labels)."""
        out = torch.full_like(y, -1)
        for k, labels in enumerate(self.classes):
            out[torch.isin(y, torch.as_tensor(labels, dtype=y.dtype))] = k
        keep = out >= 0
        return keep, out[keep]

    def to_dict(self) -> dict:
        """Plain-JSON view."""
        return {"name": self.name, "description": self.description, "examples": list(self.examples),
                "classes": [list(c) for c in self.classes]}

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        """Inverse of :meth:`to_dict`."""
        return cls(d["name"], d["description"], tuple(d["examples"]), tuple(tuple(c) for c in d["classes"]))


def _binary(name: str, description: str, yes: Sequence[int], no: Sequence[int], ex_yes: int, ex_no: int) -> Task:
    return Task(name, description, (f"A handwritten {ex_yes} → yes.", f"A handwritten {ex_no} → no."),
                (tuple(no), tuple(yes)))


_ALL = range(10)
DIGIT_TASKS: dict[str, Task] = {t.name: t for t in [
    _binary("even", "Is the digit even?", [0, 2, 4, 6, 8], [1, 3, 5, 7, 9], 4, 7),
    _binary("odd", "Is the digit odd?", [1, 3, 5, 7, 9], [0, 2, 4, 6, 8], 7, 4),
    _binary("greater_than_4", "Is the digit greater than four?", [5, 6, 7, 8, 9], [0, 1, 2, 3, 4], 8, 2),
    _binary("less_than_3", "Is the digit smaller than three?", [0, 1, 2], [3, 4, 5, 6, 7, 8, 9], 1, 5),
    _binary("greater_than_6", "Is the digit greater than six?", [7, 8, 9], [0, 1, 2, 3, 4, 5, 6], 9, 3),
    _binary("closed_loop", "Does the digit contain a closed loop?", [0, 6, 8, 9], [1, 2, 3, 5, 7], 8, 1),
    _binary("straight_lines", "Is the digit drawn with straight strokes only?", [1, 4, 7], [0, 2, 3, 5, 6, 8, 9], 7, 3),
    _binary("prime", "Is the digit a prime number?", [2, 3, 5, 7], [0, 1, 4, 6, 8, 9], 5, 6),
    _binary("multiple_of_3", "Is the digit a multiple of three?", [0, 3, 6, 9], [1, 2, 4, 5, 7, 8], 6, 2),
    _binary("three_or_eight", "Is it a 3 or an 8? Answer yes for 8.", [8], [3], 8, 3),
    _binary("one_or_seven", "Is it a 1 or a 7? Answer yes for 7.", [7], [1], 7, 1),
    _binary("zero_or_six", "Is it a 0 or a 6? Answer yes for 6.", [6], [0], 6, 0),
    _binary("four_or_nine", "Is it a 4 or a 9? Answer yes for 9.", [9], [4], 9, 4),
    _binary("two_or_five", "Is it a 2 or a 5? Answer yes for 5.", [5], [2], 5, 2),
    Task("classify_0_4", "Which digit is it, from zero to four?", ("A handwritten 3 → 3.", "A handwritten 0 → 0."),
         tuple((d,) for d in range(5))),
    Task("classify_5_9", "Which digit is it, from five to nine? Answer the digit minus five.",
         ("A handwritten 7 → 2.", "A handwritten 5 → 0."), tuple((d,) for d in range(5, 10))),
]}


class TaskZooConfig(JSONConfig, unknown_keys=NAMED_UNKNOWN_KEYS):
    """What every LoRA zoo config shares: its tasks (seen, then unseen) and a JSON round trip (JSONConfig)."""

    def task_table(self) -> dict[str, Task]:
        """Every task this zoo can refer to."""
        raise NotImplementedError

    def all_tasks(self) -> list[Task]:
        """Seen tasks, then unseen tasks."""
        table = self.task_table()
        return [table[t] for t in (*self.tasks, *self.unseen)]


@dataclass(frozen=True)
class LoRAZooConfig(TaskZooConfig, name="LoRA zoo config"):
    """A LoRA zoo: dataset, backbone, adapter, the seen and unseen tasks, and the fine-tuning schedule."""

    name: str = "lora_digits"
    dataset: str = "mnist5k"
    data_seed: int = 0
    n_train: int | None = None
    n_test: int | None = None
    image_size: int = 64
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    target_modules: tuple[str, ...] = ("conv_head",)
    rank: int = 4
    alpha: float = 8.0
    n_outputs: int = 5
    tasks: tuple[str, ...] = ("even", "greater_than_4", "less_than_3", "closed_loop", "straight_lines", "prime",
                              "multiple_of_3", "three_or_eight", "one_or_seven", "zero_or_six", "classify_0_4",
                              "classify_5_9")
    unseen: tuple[str, ...] = ("odd", "greater_than_6", "four_or_nine", "two_or_five")
    steps: int = 300
    keep_last: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    task_defs: dict[str, dict] = field(default_factory=dict)  # extra tasks (Task.to_dict) beyond DIGIT_TASKS

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "unseen", tuple(self.unseen))
        if not 0 < self.keep_last <= self.steps:
            raise ValueError(f"keep_last must be in 1..steps ({self.steps}), got {self.keep_last}")
        unknown = [t for t in (*self.tasks, *self.unseen) if t not in self.task_table()]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; define them in task_defs or pick from {sorted(DIGIT_TASKS)}")
        if set(self.tasks) & set(self.unseen):
            raise ValueError(f"tasks {sorted(set(self.tasks) & set(self.unseen))} are both seen and unseen")
        too_wide = [t for t in (*self.tasks, *self.unseen) if len(self.task_table()[t].classes) > self.n_outputs]
        if too_wide:
            raise ValueError(f"tasks {too_wide} have more classes than n_outputs={self.n_outputs}")

    def task_table(self) -> dict[str, Task]:
        """Every task this zoo can refer to."""
        return {**DIGIT_TASKS, **{k: Task.from_dict(v) for k, v in self.task_defs.items()}}


# -- the zoo -----------------------------------------------------------------------------------------------------
class LoRAZoo:
    """A collected LoRA zoo on disk: member vectors with task ids, per-member accuracies, cached features."""

    config_class: Any = LoRAZooConfig

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "config.json").exists():
            raise FileNotFoundError(f"no LoRA zoo at {self.root}: run collect_lora_zoo(config, {str(self.root)!r})")
        self.config = self.config_class.from_dict(read_json(self.root / "config.json"))
        self.manifest = pd.read_csv(self.root / "manifest.csv")
        self._tail: nn.Module | None = None
        self._features: dict[str, torch.Tensor] | None = None
        self._vectors: dict[str, torch.Tensor] = {}

    # structure
    def model(self) -> nn.Module:
        """The adapted tail (frozen base weights, LoRA + head set by a member vector)."""
        if self._tail is None:
            _, tail, name_map = build_backbone(self.config)
            self._tail = adapted_tail(self.config, tail, name_map).eval()
        return self._tail

    @property
    def spec(self) -> ParamSpec:
        """The generated tensors: LoRA factors and the task head."""
        return ParamSpec.from_dict(read_json(self.root / "spec.json"))

    @property
    def tasks(self) -> list[Task]:
        """Seen then unseen tasks."""
        return self.config.all_tasks()

    def task_index(self, name: str) -> int:
        """Position of a task in :attr:`tasks` (its id everywhere)."""
        return [t.name for t in self.tasks].index(name)

    @property
    def conditions(self) -> list[Condition]:
        """The tasks as conditions (description and two examples): seen, then unseen."""
        return [Condition(name=t.name, kind="task", seen=t.name in self.config.tasks, description=t.description,
                          examples=t.examples) for t in self.tasks]

    # members
    def vectors(self, condition: str | Sequence[str] | None = None) -> torch.Tensor:
        """Member vectors of the given tasks (default: the seen tasks), task after task."""
        out = []
        for t in condition_names(self, condition):
            if t not in self._vectors:
                self._vectors[t] = read_condition(self.root, "tasks", t, "task", t)["vectors"]
            out.append(self._vectors[t])
        return torch.cat(out)

    def task_ids(self, tasks: Sequence[str] | None = None) -> torch.Tensor:
        """Task id of every row of :meth:`vectors`."""
        m = self.manifest
        return torch.as_tensor(np.concatenate([np.full(int((m["task"] == t).sum()), self.task_index(t))
                                               for t in condition_names(self, tasks)]), dtype=torch.long)

    def accuracies(self, condition: str | Sequence[str] | None = None, split: str = "test") -> np.ndarray:
        """Stored test accuracies (percent) of the tasks' checkpoints (default: the seen tasks), task after task.
        Only test accuracies are stored (evaluating every checkpoint on the train split would dominate the cost)."""
        if split != "test":
            raise ValueError(f"a LoRA zoo stores test accuracies only, got split={split!r}: evaluate the train split "
                             "with zoo.evaluator() and zoo.data(task)")
        m = self.manifest
        return np.concatenate([m.loc[m["task"] == t, "test_acc"].to_numpy() for t in condition_names(self, condition)])

    # data
    def _feature_cache(self) -> dict[str, torch.Tensor]:
        if self._features is None:
            self._features = load_tensors(self.root / "features.safetensors")
        return self._features

    def _splits(self, t: Task) -> Splits:
        return feature_splits(self._feature_cache(), t)

    def data(self, condition: str | Task | None = None) -> TaskData:
        """The task's train/test split (inputs: backbone features, or token ids for text zoos)."""
        if condition is None:
            raise ValueError(f"a LoRA zoo's data is per task: pass one of {[t.name for t in self.tasks]}")
        t = condition if isinstance(condition, Task) else self.config.task_table()[condition_names(self, condition)[0]]
        xtr, ytr, xte, yte = self._splits(t)
        info = DatasetInfo(name=f"{self.config.name}:{t.name}", input_shape=tuple(xtr.shape[1:]),
                           num_classes=len(t.classes), class_names=tuple(str(k) for k in range(len(t.classes))),
                           n_train=len(ytr), n_test=len(yte), source="LoRA zoo inputs", seed=self.config.seed)
        return TaskData(xtr, ytr, xte, yte, info)

    def evaluator(self) -> MemberEvaluator:
        """One evaluator for every task (the tail is shared; inputs are features or token ids)."""
        return zoo_evaluator(self)

    def chance(self, task: str) -> float:
        """Majority-class accuracy (percent) on the task's test split."""
        return chance(self.data(task))

    def __len__(self) -> int:
        return int(self.manifest["task"].isin(self.config.tasks).sum())

    def describe(self) -> pd.DataFrame:
        """Per task: split sizes, classes, checkpoints, accuracy of the checkpoints, seen or unseen."""
        rows = []
        for t in self.tasks:
            d = self.data(t)
            acc = self.accuracies(t.name)
            rows.append({"task": t.name, "seen": t.name in self.config.tasks, "classes": len(t.classes),
                         "n_train": d.info.n_train, "n_test": d.info.n_test, "checkpoints": len(acc),
                         "test_acc_mean": float(acc.mean()), "test_acc_best": float(acc.max()),
                         "chance": self.chance(t.name), "description": t.description})
        return pd.DataFrame(rows).set_index("task")


def feature_splits(features: dict[str, torch.Tensor], task: Task) -> Splits:
    """A task's split of the cached backbone features: the examples of its classes, relabelled (the reader's
    :meth:`LoRAZoo.data` and the collection both use this)."""
    ktr, ytr = task.relabel(features["y_train"])
    kte, yte = task.relabel(features["y_test"])
    return features["x_train"][ktr], ytr, features["x_test"][kte], yte


def task_condition_kwargs(cfg: Any, model: nn.Module, spec: ParamSpec,
                          splits: Callable[[Task], Splits]) -> dict[str, Any]:
    """What the engine fine-tunes for a task zoo (a :class:`TaskZooConfig`): the model, its spec and trainable
    names, the per-task start (``init``: head and LoRA re-drawn from the task's seed) and loss callback, and the
    schedule — built the same way by the collecting process and by an executor's worker."""
    tasks = cfg.all_tasks()
    head = model.get_submodule(head_name(model, cfg.n_outputs))

    def init(i: int, name: str) -> None:
        torch.manual_seed(cfg.seed + 1000 * (i + 1))
        head.reset_parameters()
        reset_lora(model)  # A random (seeded per task), B zero: every task starts from the same base

    def loss(i: int, name: str) -> LossFn:
        x, y, _, _ = splits(tasks[i])
        return minibatch_cross_entropy(x, y, cfg.batch_size, cfg.seed + i)

    return {"model": model, "spec": spec, "trainable": spec.names, "init": init, "loss": loss, "steps": cfg.steps,
            "keep_last": cfg.keep_last, "lr": cfg.lr}


def collect_task_checkpoints(cfg: Any, root: Path, model: nn.Module, spec: ParamSpec,
                             splits: Callable[[Task], Splits], seconds: dict[str, float], progress: bool,
                             device: DeviceLike = None, executor: str | Executor | None = None,
                             setup: str | None = None) -> None:
    """Fine-tune LoRA + head on every task of ``cfg`` (a :class:`TaskZooConfig`) not yet on disk, each from
    the model's current state, then write the manifest of test accuracies. ``splits(task)``: the reader's split.
    ``setup`` (``"module:function"`` rebuilding :func:`task_condition_kwargs` from ``(cfg, root)``) lets an
    ``executor`` train the tasks as Ray tasks."""
    tasks = cfg.all_tasks()
    # the probe lets the evaluator check numerically that cutting the model into blocks is exact
    evaluator = MemberEvaluator(model, spec, probe=splits(tasks[0])[2][:4])

    def rows(i: int, name: str, stored: dict[str, torch.Tensor]) -> list[dict]:
        _, _, xte, yte = splits(tasks[i])
        # test accuracy only: evaluating every checkpoint on the (larger) train split would dominate the cost
        te = evaluator(stored["vectors"], xte, yte).accuracy
        return [{"task": name, "step": cfg.steps - cfg.keep_last + j + 1, "test_acc": b}
                for j, b in enumerate(te)]

    kw = task_condition_kwargs(cfg, model, spec, splits)
    collect_conditions(root, [t.name for t in tasks], rows=rows, kind="task", folder="tasks", seconds=seconds,
                       progress=progress, device=device, executor=executor,
                       unit=(setup, cfg, root) if setup is not None else None, **kw)


def lora_task_setup(cfg: "LoRAZooConfig", root: Path) -> dict[str, Any]:
    """An executor worker's :func:`task_condition_kwargs` for an image LoRA zoo whose features are in ``root``."""
    _, tail, name_map = build_backbone(cfg)
    tail = adapted_tail(cfg, tail, name_map)
    spec = ParamSpec.select(tail, ["re:lora_", f"re:^{head_name(tail, cfg.n_outputs)}\\."])
    features = load_tensors(root / "features.safetensors")
    return task_condition_kwargs(cfg, tail, spec, lambda task: feature_splits(features, task))


def collect_lora_zoo(cfg: LoRAZooConfig, root: str | Path, *, progress: bool = True,
                     device: DeviceLike = None, executor: str | Executor | None = None) -> LoRAZoo:
    """Collect (or resume) a LoRA zoo: cached backbone features, then each task's dense checkpoints (both on
    ``device``, default the CPU; what is stored is on the CPU). ``executor="ray"`` (or a ``RayExecutor``) trains
    the tasks as Ray tasks, bit-identical to this process; workers read the features from ``root``."""
    resolve_device(device)  # checked before anything is written
    make_executor(executor)
    root = Path(root)
    start_zoo(root, cfg)
    seconds = read_timings(root)
    t0 = time.perf_counter()
    prefix, tail, name_map = build_backbone(cfg)
    tail = adapted_tail(cfg, tail, name_map)
    spec = ParamSpec.select(tail, ["re:lora_", f"re:^{head_name(tail, cfg.n_outputs)}\\."])
    if not (root / "features.safetensors").exists():
        data = load_dataset(cfg.dataset, seed=cfg.data_seed, n_train=cfg.n_train, n_test=cfg.n_test)
        feats = {"x_train": backbone_features(prefix, data.x_train, cfg.image_size, progress=progress,
                                              device=device),
                 "x_test": backbone_features(prefix, data.x_test, cfg.image_size, progress=progress, device=device),
                 "y_train": data.y_train, "y_test": data.y_test}
        save_tensors(root / "features.safetensors", feats)
    seconds["features"] = time.perf_counter() - t0
    features = load_tensors(root / "features.safetensors")
    collect_task_checkpoints(cfg, root, tail, spec, lambda task: feature_splits(features, task), seconds,
                             progress, device, executor, setup="workbench.zoo.lora.tasks:lora_task_setup")
    return LoRAZoo(root)
