"""The one LoRA engine behind every LoRA zoo family: a fine-tuning loop whose loss is a callback, and a collection
loop over conditions (one atomic, checksummed file per condition; resumable).

Families using it: image tasks (:mod:`workbench.zoo.lora.tasks`), text tasks (:mod:`workbench.zoo.lora.text`) and
styles (:mod:`workbench.systems.cond_pdiff.style.zoo`). A family supplies

* its **conditions** (names, in training order; a condition's index ``i`` is its position there),
* the **model** (base weights frozen, adapters injected) and the :class:`ParamSpec` of what a member stores,
* the **trainable names** (usually ``spec.names``; a subset for e.g. LoRA-FA),
* an **init hook** ``init(i, name)``: the per-condition start, run right after the model is reset to the shared
  start (seed the global RNG, re-draw LoRA A with :func:`reset_lora`, reset a head, ...),
* a **loss callback** factory ``loss(i, name) -> loss_fn`` where ``loss_fn(model, step)`` returns the scalar loss
  of one step (it owns its data and its seeded minibatch generator),
* ``rows(i, name, stored)``: the manifest rows of a condition from its stored tensors (``vectors``, and ``loss``
  when ``keep_losses``), e.g. test accuracies.

A condition's data comes from one function shared with the family's zoo reader (``feature_splits`` and
``token_splits`` for the task zoos), so what is trained on is what ``zoo.data(condition)`` returns.

Families using it beyond the task zoos: D2NWG's dataset zoo (:mod:`workbench.systems.d2nwg.zoo`: per dataset a
linear head on pooled EfficientNet-Lite0 features, and a LoRA variant on ``conv_head``), whose loss callbacks are
:func:`minibatch_cross_entropy` over each dataset's training split.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.device import DeviceLike, resolve_device
from workbench.core.faults import fault_point
from workbench.core.io import (
    atomic_write_json,
    atomic_write_text,
    load_tensors,
    read_json,
    record_checksum,
    save_tensors,
    verify_checksum,
)
from workbench.core.params import ParamSpec, check_finite
from workbench.core.progress import tqdm
from workbench.zoo.executors import Executor, executor_scope, make_executor

__all__ = ["LossFn", "finetune", "collect_conditions", "ConditionUnit", "train_condition", "start_zoo", "read_timings", "reset_lora", "head_name",
           "minibatch_cross_entropy"]

LossFn = Callable[[nn.Module, int], torch.Tensor]
"""``loss_fn(model, step)``: the scalar loss of one fine-tuning step (the callback draws its own minibatch)."""


def minibatch_cross_entropy(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> LossFn:
    """The loss callback of a classification condition: cross-entropy on a random minibatch of (x, y) per step,
    drawn from its own generator seeded by ``seed`` (so a condition's stream does not depend on the others)."""
    g = torch.Generator().manual_seed(seed)
    data = [x, y]

    def cross_entropy(m: nn.Module, step: int) -> torch.Tensor:
        dev = next(m.parameters()).device
        if data[0].device != dev:  # moved once, on the first step, to wherever the engine put the model
            data[:] = [t.to(dev) for t in data]
        xs, ys = data
        idx = torch.randint(0, len(ys), (min(batch_size, len(ys)),), generator=g).to(dev)
        return F.cross_entropy(m(xs[idx]), ys[idx])
    return cross_entropy


def reset_lora(model: nn.Module) -> None:
    """Re-draw every peft LoRA adapter as peft initialises it: A random (from the global RNG), B zero."""
    for m in model.modules():
        if hasattr(m, "reset_lora_parameters"):
            m.reset_lora_parameters("default", True)


def head_name(model: nn.Module, n_outputs: int) -> str:
    """Name of the condition head: the last ``nn.Linear`` with ``n_outputs`` outputs."""
    heads = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == n_outputs]
    if not heads:
        raise ValueError(f"no task head with {n_outputs} outputs in the adapted tail")
    return heads[-1]


def finetune(model: nn.Module, spec: ParamSpec, trainable: Collection[str], loss_fn: LossFn, *, steps: int,
             keep_last: int, lr: float, progress: bool = False,
             desc: str = "LoRA") -> tuple[torch.Tensor, list[float]]:
    """Adam on the ``trainable`` parameters (all others frozen) for ``steps`` steps of ``loss_fn``; the checkpoint
    vectors (``spec``) and losses of the last ``keep_last`` steps."""
    names = set(trainable)
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if n in names], lr=lr)
    model.eval()  # normalisation keeps its pretrained statistics and dropout is off: only the adapters move
    kept, losses = [], []
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        loss = loss_fn(model, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= steps - keep_last:
            kept.append(spec.flatten(model.state_dict()).cpu())
            losses.append(float(loss.detach()))
    return torch.stack(kept), losses


def start_zoo(root: Path, cfg: Any) -> None:
    """Create the zoo directory, refusing to mix configurations (collection resumes only the same config)."""
    root.mkdir(parents=True, exist_ok=True)
    if (root / "config.json").exists():
        saved = read_json(root / "config.json")
        if saved != json.loads(json.dumps(cfg.to_dict())):
            raise ValueError(f"{root} holds a LoRA zoo with a different configuration; pick another directory "
                             "or delete it to recollect")
    atomic_write_json(root / "config.json", cfg.to_dict())


def read_timings(root: Path) -> dict[str, float]:
    """The seconds recorded by earlier (interrupted) runs, so a resumed collection keeps them."""
    return read_json(root / "timings.json") if (root / "timings.json").exists() else {}


def read_condition(root: Path, folder: str, stem: str, kind: str, name: str) -> dict[str, torch.Tensor]:
    """One condition's stored checkpoints (``vectors``, and ``loss`` where kept), verified against the checksum
    recorded when the file was committed: a damaged or swapped file is refused, naming the condition."""
    rel = f"{folder}/{stem}.safetensors"
    verify_checksum(root, rel, f"the checkpoints of {kind} {name!r}")
    return load_tensors(root / rel)


@dataclass(frozen=True)
class ConditionUnit:
    """One condition of a LoRA zoo as a work unit for an executor (a Ray task): ``setup`` names the family's
    function (``"module:function"``) that rebuilds, from ``config`` and the zoo's ``root``, what the collection
    fine-tunes — the keyword arguments :func:`collect_conditions` takes (model, spec, trainable, init, loss, steps,
    keep_last, lr, keep_losses). Everything in it pickles; the worker reads the zoo's prepared files (features,
    tokens, base weights) from ``root``, so on a cluster ``root`` must be on storage every node sees."""

    setup: str
    config: Any
    root: str
    index: int
    name: str
    device: str = "cpu"
    threads: int = 1  # the worker's torch threads: its CPUs, whatever OMP_NUM_THREADS the cluster inherited


_PREPARED: dict[tuple[str, str, str], tuple[dict[str, Any], dict[str, torch.Tensor]]] = {}


def _prepared(unit: ConditionUnit) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    # a worker trains many conditions of one zoo: build the model once per process (and keep one zoo only)
    key = (unit.setup, unit.root, json.dumps(unit.config.to_dict(), sort_keys=True))
    if key not in _PREPARED:
        _PREPARED.clear()
        module, fn = unit.setup.split(":")
        kw = getattr(importlib.import_module(module), fn)(unit.config, Path(unit.root))
        _PREPARED[key] = kw, {k: v.clone() for k, v in kw["model"].state_dict().items()}
    return _PREPARED[key]


def _fine_tune_condition(kw: dict[str, Any], base_state: dict[str, torch.Tensor], i: int, name: str, kind: str,
                         device: torch.device, progress: bool) -> dict[str, torch.Tensor]:
    """One condition from the shared start: reset and ``init`` on the CPU, fine-tune on ``device``."""
    model = kw["model"]
    model.to("cpu").load_state_dict(base_state)
    init = kw["init"]
    init(i, name)
    vecs, losses = finetune(model.to(device), kw["spec"], kw["trainable"], kw["loss"](i, name), steps=kw["steps"],
                            keep_last=kw["keep_last"], lr=kw["lr"], progress=progress, desc=f"LoRA {name}")
    model.to("cpu")  # the family's rows() and the next init see the CPU model
    check_finite(vecs, f"the LoRA checkpoints of {kind} {name!r}")
    return {"vectors": vecs, **({"loss": torch.tensor(losses)} if kw.get("keep_losses") else {})}


def train_condition(unit: ConditionUnit) -> tuple[dict[str, torch.Tensor], float]:
    """Fine-tune one condition of a unit (what an executor's worker runs): its stored tensors and seconds. A pure
    function of the unit, so a Ray worker computes the bytes the collecting process would with the same number of
    threads (``unit.threads``: the executor's ``cpus_per_task``)."""
    fault_point("lora_condition")  # tests kill a worker here
    torch.set_num_threads(unit.threads)  # the float summation order depends on it: one setting, not the env's
    kw, base_state = _prepared(unit)
    t0 = time.perf_counter()
    stored = _fine_tune_condition(kw, base_state, unit.index, unit.name, "condition", resolve_device(unit.device),
                                  progress=False)
    return stored, time.perf_counter() - t0


def _manifest_covers(path: Path, kind: str, conditions: Sequence[str]) -> bool:
    """Whether the manifest at ``path`` lists exactly ``conditions``, in order (a readable, finished one)."""
    if not path.exists():
        return False
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError):
        return False
    return kind in frame.columns and list(dict.fromkeys(frame[kind].astype(str))) == [str(c) for c in conditions]


def collect_conditions(root: Path, conditions: Sequence[str], model: nn.Module, spec: ParamSpec, *,
                       trainable: Collection[str], init: Callable[[int, str], None],
                       loss: Callable[[int, str], LossFn],
                       rows: Callable[[int, str, dict[str, torch.Tensor]], list[dict]],
                       kind: str, folder: str, steps: int, keep_last: int, lr: float,
                       seconds: dict[str, float], keep_losses: bool = False,
                       file_stem: Callable[[str], str] = str, progress: bool = True,
                       device: DeviceLike = None, executor: str | Executor | None = None,
                       unit: tuple[str, Any, Path] | None = None) -> None:
    """Fine-tune every condition not yet on disk from the model's current state, then write the manifest.

    Each condition's checkpoints go to ``folder/<file_stem(name)>.safetensors`` (``vectors``, plus the kept losses
    as ``loss`` when ``keep_losses``), written atomically and checksummed once complete; a file already there is
    verified against its checksum and reloaded, so an interrupted collection redoes only the missing conditions.
    ``seconds`` (per condition, beside the caller's own entries) goes to ``timings.json``; ``rows`` of every
    condition to ``manifest.csv``.

    ``device``: where each condition fine-tunes (default: the CPU). The reset and ``init`` run on the CPU, so a
    condition starts from the very same draws on any device; its loss callback's data moves there once.
    ``executor`` (``"ray"`` or an executor object, see :mod:`workbench.zoo.executors`) with ``unit`` =
    ``(setup, config, setup_root)`` trains the missing conditions as :class:`ConditionUnit` tasks; ``setup(config,
    setup_root)`` must rebuild exactly these keyword arguments. Only this process writes: each result is committed
    as it arrives."""
    dev = resolve_device(device)
    make_executor(executor)  # a bad executor is refused before anything is written
    (root / folder).mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "spec.json", spec.to_dict())
    kw = {"model": model, "spec": spec, "trainable": trainable, "init": init, "loss": loss, "steps": steps,
          "keep_last": keep_last, "lr": lr, "keep_losses": keep_losses}
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    rel = {name: f"{folder}/{file_stem(name)}.safetensors" for name in conditions}
    todo = [(i, name) for i, name in enumerate(conditions) if not (root / rel[name]).exists()]
    fresh: dict[str, dict[str, torch.Tensor]] = {}
    bar = tqdm(total=len(conditions), initial=len(conditions) - len(todo), desc=folder, disable=not progress)

    def commit(name: str, stored: dict[str, torch.Tensor], secs: float) -> None:
        save_tensors(root / rel[name], stored, metadata={kind: name})
        record_checksum(root, rel[name])
        seconds[name] = secs
        atomic_write_json(root / "timings.json", seconds)
        fresh[name] = stored
        bar.update(1)

    with executor_scope(executor) as ex:
        if todo and ex.name != "local" and unit is not None:
            setup, config, setup_root = unit
            threads = max(1, int(getattr(ex, "cpus_per_task", 1)))
            units = [ConditionUnit(setup, config, str(setup_root), i, name, str(dev), threads) for i, name in todo]
            for u, (stored, secs) in ex.map_unordered(train_condition, units):
                commit(u.name, stored, secs)
        else:
            for i, name in todo:
                t1 = time.perf_counter()
                stored = _fine_tune_condition(kw, base_state, i, name, kind, dev, progress)
                commit(name, stored, time.perf_counter() - t1)
    bar.close()
    if not todo and _manifest_covers(root / "manifest.csv", kind, conditions):
        # a finished zoo reopened: its manifest is complete (written last, atomically), so nothing is
        # re-evaluated; every condition's file is still verified against its checksum
        for name in conditions:
            read_condition(root, folder, file_stem(name), kind, name)
        return
    manifest = []
    for i, name in enumerate(conditions):
        # resume: a condition's file is written atomically once it is complete, and verified when reloaded
        stored = fresh.get(name) or read_condition(root, folder, file_stem(name), kind, name)
        manifest += rows(i, name, stored)
    atomic_write_text(root / "manifest.csv", pd.DataFrame(manifest).to_csv(index=False))
    atomic_write_json(root / "timings.json", seconds)
