"""RPG's unseen-task zoo: binary tasks on MNIST-5k given by a 10-bit code (bit d = 1: digit d is positive), one
model per code, fine-tuned — every parameter — from one pretrained 10-class model with the same fresh 2-way head,
all codes of a chunk trained together by the vectorised trainer (each member its own labels). Codes are drawn
without repetition; the first ``n_seen`` are seen by the generator, the next ``n_unseen`` held out (their models are
trained too: they are the reference an unseen-task generator is compared with).

Layout of a zoo folder::

    config.json            TaskCodeZooConfig
    codes.json             every code (seen, then held out), in member order
    base.safetensors       the pretrained 10-class model the fine-tunes start from
    chunks/<i>.safetensors the fine-tuned vectors of a chunk of codes, with their train/test accuracies
    checksums.json         sha256 of every file above

Writes are atomic and checksummed; an interrupted collection redoes only the chunks that are missing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from workbench.core.config import JSONConfig
from workbench.core.device import DeviceLike, resolve_device
from workbench.core.io import (
    CorruptFileError,
    atomic_write_json,
    load_tensors,
    read_json,
    record_checksum,
    save_tensors,
    verify_checksum,
)
from workbench.core.params import ParamSpec
from workbench.core.progress import tqdm
from workbench.data import DatasetInfo, TaskData
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.nn.architectures import ArchConfig, build_model
from workbench.zoo.config import DataConfig
from workbench.zoo.protocol import Condition
from workbench.zoo.training import TrainConfig, train_loop, train_vectorized

__all__ = ["TaskCodeZooConfig", "TaskCodeZoo", "collect_task_code_zoo", "code_name", "parse_code", "code_labels",
           "hamming"]


def code_name(code: Sequence[int]) -> str:
    """The 10 bits as a string, digit 0 first (``"0110000001"``: digits 1, 2 and 9 positive)."""
    return "".join(str(int(b)) for b in code)


def parse_code(code: str | Sequence[int] | torch.Tensor, n_classes: int = 10) -> tuple[int, ...]:
    """A code from its string or its bits; a clear error for anything else."""
    bits = list(code) if not isinstance(code, torch.Tensor) else code.reshape(-1).tolist()
    try:
        bits = [int(b) for b in bits]
    except (TypeError, ValueError):
        bits = None
    if bits is None or len(bits) != n_classes or any(b not in (0, 1) for b in bits):
        raise ValueError(f"a task code is {n_classes} bits (0/1), digit 0 first, e.g. '0110000001'; got {code!r}")
    if sum(bits) in (0, n_classes):
        raise ValueError(f"code {code_name(bits)} makes every digit the same class: no binary task to learn")
    return tuple(bits)


def code_labels(codes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary labels (M, n) of M codes (M, C) for digit labels ``y`` (n,)."""
    return codes.long()[:, y]


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) Hamming distances between codes."""
    return (a[:, None, :].long() != b[None, :, :].long()).sum(-1)


def _default_arch() -> ArchConfig:
    return ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=2, hidden=(64, 32))


@dataclass(frozen=True)
class TaskCodeZooConfig(JSONConfig, name="task-code zoo config"):
    """Which codes, which model, and how the pretrained model and each code's fine-tune are trained."""

    data: DataConfig = field(default_factory=DataConfig)
    arch: ArchConfig = field(default_factory=_default_arch)      # the binary model (num_classes 2)
    n_seen: int = 200
    n_unseen: int = 50
    min_positive: int = 2                                        # digits per code that are positive: a range, so
    max_positive: int = 8                                        # that no task is nearly all one class
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, batch_size=128, lr=0.05))
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, batch_size=128, lr=0.02))
    seed: int = 0
    chunk_size: int = 125

    def __post_init__(self) -> None:
        problems = []
        if self.arch.num_classes != 2:
            problems.append(f"arch.num_classes must be 2 (binary tasks), got {self.arch.num_classes}")
        if self.n_seen < 1 or self.n_unseen < 0 or self.chunk_size < 1:
            problems.append("n_seen >= 1, n_unseen >= 0 and chunk_size >= 1 are required")
        if not 1 <= self.min_positive <= self.max_positive <= 9:
            problems.append(f"need 1 <= min_positive <= max_positive <= 9, got {self.min_positive}, "
                            f"{self.max_positive}")
        elif self.n_seen + self.n_unseen > self.n_codes_available():
            problems.append(f"{self.n_seen + self.n_unseen} codes asked for but only {self.n_codes_available()} have "
                            f"{self.min_positive}..{self.max_positive} positive digits")
        if problems:
            raise ValueError("invalid task-code zoo config: " + "; ".join(problems))

    def n_codes_available(self) -> int:
        """How many 10-bit codes have between min_positive and max_positive ones."""
        from math import comb
        return sum(comb(10, k) for k in range(self.min_positive, self.max_positive + 1))

    def codes(self) -> torch.Tensor:
        """(n_seen + n_unseen, 10) codes: every admissible code in a seeded random order, seen ones first."""
        allowed = [c for c in itertools.product((0, 1), repeat=10)
                   if self.min_positive <= sum(c) <= self.max_positive]
        order = np.random.default_rng(self.seed).permutation(len(allowed))[: self.n_seen + self.n_unseen]
        return torch.tensor([allowed[i] for i in order], dtype=torch.long)

    def base_arch(self) -> ArchConfig:
        """The 10-class model pretrained before the binary fine-tunes (same body)."""
        return ArchConfig(**{**self.arch.to_dict(), "num_classes": 10})


def _head_names(model: nn.Module) -> list[str]:
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return [f"{last}.weight", f"{last}.bias"]


def _binary_template(cfg: TaskCodeZooConfig, base_state: dict[str, torch.Tensor]) -> nn.Module:
    """The pretrained body with a fresh 2-way head (seeded: every code starts from the very same model)."""
    model = build_model(cfg.arch, seed=cfg.seed + 1)
    head = set(_head_names(model))
    model.load_state_dict({**{k: v for k, v in base_state.items() if k not in head},
                           **{k: v for k, v in model.state_dict().items() if k in head}})
    return model


def collect_task_code_zoo(cfg: TaskCodeZooConfig, root: str | Path, *, progress: bool = True,
                          device: DeviceLike = None) -> "TaskCodeZoo":
    """Collect (or resume) the zoo: the pretrained model, then every code's fine-tune, a chunk at a time; both
    train (and are evaluated) on ``device`` (default the CPU), what is stored is on the CPU."""
    root = Path(root)
    dev = resolve_device(device)
    data = cfg.data.load()  # before anything is written: a bad config leaves no half-made folder
    if data.info.num_classes != 10:
        raise ValueError(f"task codes need a 10-class dataset, {data.info.name} has {data.info.num_classes}")
    codes = cfg.codes()
    (root / "chunks").mkdir(parents=True, exist_ok=True)
    if (root / "config.json").exists():
        saved = read_json(root / "config.json")
        if saved != cfg.to_dict():
            raise ValueError(f"{root} holds a task-code zoo of another config; use another folder or delete it")
    else:
        atomic_write_json(root / "config.json", cfg.to_dict())
    atomic_write_json(root / "codes.json", {"codes": [code_name(c) for c in codes.tolist()], "n_seen": cfg.n_seen})
    on = data.to(dev)  # moved once; the labels of each code are derived on the CPU and moved with their chunk
    if not (root / "base.safetensors").exists():
        base = build_model(cfg.base_arch(), seed=cfg.seed).to(dev).train()
        train_loop(base, on.x_train, on.y_train, cfg.pretrain, progress=progress)
        save_tensors(root / "base.safetensors", {k: v.cpu() for k, v in base.eval().state_dict().items()})
        record_checksum(root, "base.safetensors")
    verify_checksum(root, "base.safetensors", "the pretrained model")
    template = _binary_template(cfg, load_tensors(root / "base.safetensors"))
    spec = ParamSpec.select(template, ("*",))
    init_vec = spec.flatten(template)
    evaluator = MemberEvaluator(template, spec, probe=on.x_test, device=dev)
    chunks = [list(range(s, min(s + cfg.chunk_size, len(codes)))) for s in range(0, len(codes), cfg.chunk_size)]
    todo = [i for i in range(len(chunks)) if not (root / "chunks" / f"{i:04d}.safetensors").exists()]
    bar = tqdm(total=len(codes), initial=len(codes) - sum(len(chunks[i]) for i in todo),
               desc="task-code zoo: fine-tunes", disable=not progress)
    for i in todo:
        ids = chunks[i]
        c = codes[ids]
        init = {k: v.unsqueeze(0).repeat(len(ids), *([1] * v.ndim)) for k, v in spec.unflatten(init_vec).items()}
        states, _ = train_vectorized(cfg.arch, init, on.x_train, code_labels(c, data.y_train).to(dev), cfg.finetune)
        vecs = spec.flatten_batch({k: v.cpu() for k, v in states.items()})
        tr = np.array([evaluator(vecs[j:j + 1], on.x_train, code_labels(c[j:j + 1], data.y_train)[0]).accuracy[0]
                       for j in range(len(ids))])
        te = np.array([evaluator(vecs[j:j + 1], on.x_test, code_labels(c[j:j + 1], data.y_test)[0]).accuracy[0]
                       for j in range(len(ids))])
        name = f"chunks/{i:04d}.safetensors"
        save_tensors(root / name, {"vectors": vecs.contiguous(), "ids": torch.tensor(ids),
                                   "train_acc": torch.from_numpy(tr), "test_acc": torch.from_numpy(te)})
        record_checksum(root, name)
        bar.update(len(ids))
    bar.close()
    return TaskCodeZoo(root)


class TaskCodeZoo:
    """A collected task-code zoo (implements :class:`~workbench.zoo.protocol.ParameterZoo`, condition kind
    ``code``): one member per code; ``data(code)`` is MNIST-5k with that code's binary labels."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "config.json").exists():
            raise FileNotFoundError(f"no task-code zoo in {self.root}: collect it with collect_task_code_zoo")
        self.config = TaskCodeZooConfig.from_dict(read_json(self.root / "config.json"))
        meta = read_json(self.root / "codes.json")
        self.codes = torch.tensor([parse_code(c) for c in meta["codes"]], dtype=torch.long)
        self.n_seen = int(meta["n_seen"])
        verify_checksum(self.root, "base.safetensors", "the pretrained model")
        self._template = _binary_template(self.config, load_tensors(self.root / "base.safetensors"))
        self.spec = ParamSpec.select(self._template, ("*",))
        vecs = torch.empty(len(self.codes), self.spec.numel)
        self._acc = {"train": np.full(len(self.codes), np.nan), "test": np.full(len(self.codes), np.nan)}
        seen_ids = set()
        for f in sorted((self.root / "chunks").glob("*.safetensors")):
            rel = f"chunks/{f.name}"
            verify_checksum(self.root, rel, "a chunk of fine-tuned models")
            t = load_tensors(f)
            ids = t["ids"].long()
            vecs[ids] = t["vectors"]
            self._acc["train"][ids.numpy()] = t["train_acc"].numpy()
            self._acc["test"][ids.numpy()] = t["test_acc"].numpy()
            seen_ids.update(ids.tolist())
        missing = sorted(set(range(len(self.codes))) - seen_ids)
        if missing:
            raise CorruptFileError(f"{self.root}: {len(missing)} codes have no fine-tuned model yet (e.g. member "
                                   f"{missing[0]}); run collect_task_code_zoo again (it resumes)")
        self._vectors = vecs
        self._data: TaskData | None = None
        self.names = [code_name(c) for c in self.codes.tolist()]
        self._index = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def conditions(self) -> list[Condition]:
        """One condition per code (kind ``code``), seen ones first."""
        return [Condition(name=n, kind="code", seen=i < self.n_seen, code=tuple(self.codes[i].tolist()),
                          description="positive digits: " + ", ".join(str(d) for d in range(10) if n[d] == "1"))
                for i, n in enumerate(self.names)]

    def ids(self, condition: str | Sequence[str] | None = None) -> list[int]:
        """Member indices of a code (or codes; all members for None)."""
        if condition is None:
            return list(range(len(self)))
        names = [condition] if isinstance(condition, str) else list(condition)
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise KeyError(f"codes {unknown[:3]} are not in this zoo ({len(self)} codes, e.g. {self.names[:2]})")
        return [self._index[n] for n in names]

    def seen_ids(self) -> list[int]:
        """Members whose code the generator is trained on."""
        return list(range(self.n_seen))

    def unseen_ids(self) -> list[int]:
        """Members whose code is held out."""
        return list(range(self.n_seen, len(self)))

    def model(self) -> nn.Module:
        """The binary model every fine-tune started from (pretrained body, fresh head)."""
        return self._template

    def vectors(self, condition: str | Sequence[str] | None = None) -> torch.Tensor:
        """(N, P) fine-tuned vectors of the code(s) asked for."""
        return self._vectors[self.ids(condition)]

    def digits(self) -> TaskData:
        """The 10-class dataset the codes relabel."""
        if self._data is None:
            self._data = self.config.data.load()
        return self._data

    def data(self, condition: str | None = None) -> TaskData:
        """The binary task of a code (the dataset relabelled: 1 where the digit's bit is 1)."""
        if condition is None:
            raise ValueError("a task-code zoo has one binary task per code: pass data(code), e.g. "
                             f"data({self.names[0]!r})")
        code = self.codes[self.ids(condition)[0]][None] if condition in self._index else \
            torch.tensor([parse_code(condition)])
        d = self.digits()
        info = DatasetInfo(**{**d.info.to_dict(), "name": f"{d.info.name}[{code_name(code[0].tolist())}]",
                              "num_classes": 2, "class_names": ("negative", "positive"),
                              "input_shape": tuple(d.info.input_shape)})
        return TaskData(d.x_train, code_labels(code, d.y_train)[0], d.x_test, code_labels(code, d.y_test)[0], info)

    def accuracies(self, condition: str | Sequence[str] | None = None, split: str = "test") -> np.ndarray:
        """Stored accuracies (percent) of the members of the code(s), on their own task."""
        if split not in self._acc:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self._acc[split][self.ids(condition)]

    def describe(self) -> pd.DataFrame:
        """One row per code: its bits, seen or not, how many digits are positive, accuracies."""
        return pd.DataFrame({"code": self.names, "seen": [i < self.n_seen for i in range(len(self))],
                             "n_positive": self.codes.sum(1).numpy(), "train_acc": self._acc["train"],
                             "test_acc": self._acc["test"]})
