"""Cond P-Diff's NLP setting: LoRA zoos on BERT-style sequence classifiers over GLUE tasks.

Tasks are read from ``<data_dir>/<task>/{train,test}.jsonl`` (one ``{"text": ..., "label": ...}`` per line; sentence
pairs joined with the tokenizer's separator). :func:`export_glue` writes that layout from HF ``datasets`` when the
user has GLUE locally (nothing is downloaded unless ``datasets`` may do so). Members are LoRA factors on the
attention ``query``/``value`` projections plus the classification head, from the last steps of each task's fine-tune.
The same conditional generator and evaluation as the image zoo apply (:class:`workbench.zoo.lora.tasks.LoRAZoo` interface).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from workbench.core.device import DeviceLike, resolve_device
from workbench.core.io import atomic_write_text, load_tensors, save_tensors
from workbench.core.params import ParamSpec
from workbench.zoo.executors import Executor, make_executor
from workbench.zoo.lora.engine import head_name, read_timings, start_zoo
from workbench.zoo.lora.tasks import (
    LoRAZoo,
    Splits,
    Task,
    TaskZooConfig,
    collect_task_checkpoints,
    task_condition_kwargs,
)

__all__ = ["GLUE_TASKS", "TextLoRAZooConfig", "TextLoRAZoo", "collect_text_lora_zoo", "export_glue",
           "read_jsonl_task", "token_splits"]


def _t(name: str, description: str, ex1: str, ex2: str) -> dict:
    return {"name": name, "description": description, "examples": [ex1, ex2], "classes": [[0], [1]]}


# Descriptions and two examples per task, as Cond P-Diff conditions on them. STS-B is binarised (score >= 3).
GLUE_TASKS: dict[str, dict] = {t["name"]: t for t in [
    _t("sst2", "Is the sentiment of this movie review positive?", "'a gorgeous, witty film' → yes.",
       "'a dull, lifeless mess' → no."),
    _t("rte", "Does the first sentence entail the second? (0 = entailment)", "'A dog runs in a park.' / 'An animal is "
       "outside.' → 0.", "'A man sleeps.' / 'The man is running.' → 1."),
    _t("mrpc", "Are the two sentences paraphrases of each other?", "'He said hello.' / 'He greeted them.' → yes.",
       "'Prices rose.' / 'It rained all day.' → no."),
    _t("cola", "Is the sentence grammatically acceptable?", "'The cat sat on the mat.' → yes.",
       "'Cat the mat on sat.' → no."),
    _t("qnli", "Does the sentence contain the answer to the question? (0 = yes)", "'Where is Paris?' / 'Paris is in "
       "France.' → 0.", "'Who wrote Hamlet?' / 'It rained.' → 1."),
    _t("stsb", "Are the two sentences semantically similar (score of at least 3 out of 5)?",
       "'A man plays guitar.' / 'A person plays a guitar.' → yes.", "'A cat eats.' / 'The market fell.' → no."),
]}
_GLUE_FIELDS = {"sst2": ("sentence", None), "rte": ("sentence1", "sentence2"), "mrpc": ("sentence1", "sentence2"),
                "cola": ("sentence", None), "qnli": ("question", "sentence"), "stsb": ("sentence1", "sentence2")}


@dataclass(frozen=True)
class TextLoRAZooConfig(TaskZooConfig, name="text LoRA zoo config"):
    """A LoRA zoo over text classification tasks on a BERT-style model."""

    name: str = "lora_glue"
    model_path: str = ""                      # a local HF model directory (BERT, MiniLM, ...)
    data_dir: str = ""                        # <data_dir>/<task>/{train,test}.jsonl
    tasks: tuple[str, ...] = ("sst2", "rte", "mrpc", "cola")
    unseen: tuple[str, ...] = ("qnli", "stsb")
    task_defs: dict[str, dict] = field(default_factory=dict)  # Task.to_dict rows beyond GLUE_TASKS
    target_modules: tuple[str, ...] = ("query", "value")
    rank: int = 8
    alpha: float = 16.0
    n_outputs: int = 2
    max_length: int = 64
    n_train: int | None = None
    n_test: int | None = None
    steps: int = 300
    keep_last: int = 150
    batch_size: int = 16
    lr: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("target_modules", "tasks", "unseen"):
            object.__setattr__(self, k, tuple(getattr(self, k)))
        if not 0 < self.keep_last <= self.steps:
            raise ValueError(f"keep_last must be in 1..steps ({self.steps}), got {self.keep_last}")
        unknown = [t for t in (*self.tasks, *self.unseen) if t not in self.task_table()]
        if unknown:
            raise ValueError(f"unknown text tasks {unknown}; define them in task_defs or pick from {sorted(GLUE_TASKS)}")

    def task_table(self) -> dict[str, Task]:
        """Every task this zoo can refer to."""
        return {k: Task.from_dict(v) for k, v in {**GLUE_TASKS, **self.task_defs}.items()}


def read_jsonl_task(path: str | Path) -> tuple[list[str], list[int]]:
    """Texts and integer labels of one ``.jsonl`` split, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: write {{'text', 'label'}} rows per line, or export GLUE with "
                                "workbench.zoo.lora.text.export_glue(task, data_dir)")
    texts, labels = [], []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            texts.append(str(row["text"]))
            labels.append(int(row["label"]))
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            raise ValueError(f"{path}:{i + 1}: expected a JSON object with 'text' and an integer 'label' ({e})") from None
    return texts, labels


def export_glue(task: str, data_dir: str | Path, *, sep: str = " [SEP] ") -> Path:
    """Write GLUE ``task`` (train; validation as test) from HF ``datasets`` into the jsonl layout."""
    # imported here: HF datasets is optional (only export_glue needs it)
    from datasets import load_dataset

    a, b = _GLUE_FIELDS[task]
    ds = load_dataset("glue", task)
    out = Path(data_dir) / task
    out.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train"), ("validation", "test")):
        rows = []
        for r in ds[split]:
            text = r[a] if b is None else r[a] + sep + r[b]
            label = int(r["label"] >= 3.0) if task == "stsb" else int(r["label"])
            rows.append(json.dumps({"text": text, "label": label}))
        atomic_write_text(out / f"{name}.jsonl", "\n".join(rows) + "\n")
    return out


class _Logits(nn.Module):
    """Token ids (N, L) → logits; padding is masked (pad id 0 as in BERT vocabularies, or the tokenizer's)."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long()).logits


def _build(cfg: TextLoRAZooConfig) -> tuple[nn.Module, Any]:
    # imported here: peft takes ~6 s to import (it pulls in transformers) and only LoRA zoos need it
    from peft import LoraConfig, inject_adapter_in_model

    # imported here: transformers is slow to import and only the text models need it
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # imported here: transformers is slow to import and only the text models need it
    from transformers.utils import logging as hf_logging

    if not cfg.model_path or not Path(cfg.model_path).exists():
        raise FileNotFoundError(f"text LoRA zoo: model_path {cfg.model_path!r} is not a local HF model directory "
                                "(nothing is downloaded)")
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(cfg.model_path)
    torch.manual_seed(cfg.seed)
    model = AutoModelForSequenceClassification.from_pretrained(cfg.model_path, num_labels=cfg.n_outputs).eval()
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules), lora_dropout=0.0)
    model = inject_adapter_in_model(lora, model)
    return _Logits(model, tok.pad_token_id or 0).eval(), tok


class TextLoRAZoo(LoRAZoo):
    """A collected text LoRA zoo (same interface as the image zoo; inputs are token ids)."""

    config_class = TextLoRAZooConfig

    def model(self) -> nn.Module:
        """The classifier with LoRA injected (frozen base, LoRA + head set by a member vector)."""
        if self._tail is None:
            self._tail, _ = _build(self.config)
        return self._tail

    def _splits(self, t: Task) -> Splits:
        return token_splits(self.root, t)


def token_splits(root: Path, task: Task) -> Splits:
    """A task's tokenised split as collected into ``root/tokens`` (the reader and the collection use this)."""
    d = load_tensors(root / "tokens" / f"{task.name}.safetensors")
    return d["x_train"], d["y_train"], d["x_test"], d["y_test"]


def text_task_setup(cfg: TextLoRAZooConfig, root: Path) -> dict[str, Any]:
    """An executor worker's :func:`~workbench.zoo.lora.tasks.task_condition_kwargs` for a text LoRA zoo whose
    tokens are in ``root``."""
    model, _ = _build(cfg)
    spec = ParamSpec.select(model, ["re:lora_", f"re:^{head_name(model, cfg.n_outputs)}\\."])
    return task_condition_kwargs(cfg, model, spec, lambda task: token_splits(root, task))


def collect_text_lora_zoo(cfg: TextLoRAZooConfig, root: str | Path, *, progress: bool = True,
                          device: DeviceLike = None, executor: str | Executor | None = None) -> TextLoRAZoo:
    """Collect (or resume) a text LoRA zoo: tokenise each task once, then each task's dense checkpoints
    (fine-tuned on ``device``, default the CPU; with ``executor="ray"`` as Ray tasks, reading the tokens from
    ``root``)."""
    resolve_device(device)  # checked before anything is written
    make_executor(executor)
    root = Path(root)
    start_zoo(root, cfg)
    seconds = read_timings(root)
    t0 = time.perf_counter()
    model, tok = _build(cfg)
    spec = ParamSpec.select(model, ["re:lora_", f"re:^{head_name(model, cfg.n_outputs)}\\."])
    (root / "tokens").mkdir(exist_ok=True)
    for task in cfg.all_tasks():
        path = root / "tokens" / f"{task.name}.safetensors"
        if path.exists():
            continue
        out = {}
        for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
            texts, labels = read_jsonl_task(Path(cfg.data_dir) / task.name / f"{split}.jsonl")
            texts, labels = texts[:n], labels[:n]
            bad = sorted({y for y in labels if not 0 <= y < cfg.n_outputs})
            if bad:
                raise ValueError(f"task {task.name}: labels {bad} do not fit n_outputs={cfg.n_outputs}")
            enc = tok(texts, padding="max_length", truncation=True, max_length=cfg.max_length, return_tensors="pt")
            out[f"x_{split}"], out[f"y_{split}"] = enc["input_ids"], torch.as_tensor(labels)
        save_tensors(path, out)
    seconds["tokenise"] = time.perf_counter() - t0
    collect_task_checkpoints(cfg, root, model, spec, lambda task: token_splits(root, task), seconds, progress,
                             device, executor, setup="workbench.zoo.lora.text:text_task_setup")
    return TextLoRAZoo(root)
