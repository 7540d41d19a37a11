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

import json
import time
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.core.device import DeviceLike, resolve_device
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

__all__ = ["LossFn", "finetune", "collect_conditions", "start_zoo", "read_timings", "reset_lora", "head_name",
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


def collect_conditions(root: Path, conditions: Sequence[str], model: nn.Module, spec: ParamSpec, *,
                       trainable: Collection[str], init: Callable[[int, str], None],
                       loss: Callable[[int, str], LossFn],
                       rows: Callable[[int, str, dict[str, torch.Tensor]], list[dict]],
                       kind: str, folder: str, steps: int, keep_last: int, lr: float,
                       seconds: dict[str, float], keep_losses: bool = False,
                       file_stem: Callable[[str], str] = str, progress: bool = True,
                       device: DeviceLike = None) -> None:
    """Fine-tune every condition not yet on disk from the model's current state, then write the manifest.

    Each condition's checkpoints go to ``folder/<file_stem(name)>.safetensors`` (``vectors``, plus the kept losses
    as ``loss`` when ``keep_losses``), written atomically and checksummed once complete; a file already there is
    verified against its checksum and reloaded, so an interrupted collection redoes only the missing conditions.
    ``seconds`` (per condition, beside the caller's own entries) goes to ``timings.json``; ``rows`` of every
    condition to ``manifest.csv``.

    ``device``: where each condition fine-tunes (default: the CPU). The reset and ``init`` run on the CPU, so a
    condition starts from the very same draws on any device; its loss callback's data moves there once."""
    dev = resolve_device(device)
    (root / folder).mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "spec.json", spec.to_dict())
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    manifest = []
    for i, name in enumerate(tqdm(conditions, desc=folder, disable=not progress)):
        rel = f"{folder}/{file_stem(name)}.safetensors"
        if (root / rel).exists():  # resume: a condition's file is written atomically once it is complete
            stored = read_condition(root, folder, file_stem(name), kind, name)
        else:
            model.to("cpu").load_state_dict(base_state)
            t1 = time.perf_counter()
            init(i, name)
            vecs, losses = finetune(model.to(dev), spec, trainable, loss(i, name), steps=steps, keep_last=keep_last,
                                    lr=lr, progress=progress, desc=f"LoRA {name}")
            model.to("cpu")  # the family's rows() and the next init see the CPU model
            check_finite(vecs, f"the LoRA checkpoints of {kind} {name!r}")
            stored = {"vectors": vecs, **({"loss": torch.tensor(losses)} if keep_losses else {})}
            save_tensors(root / rel, stored, metadata={kind: name})
            record_checksum(root, rel)
            seconds[name] = time.perf_counter() - t1
            atomic_write_json(root / "timings.json", seconds)
        manifest += rows(i, name, stored)
    atomic_write_text(root / "manifest.csv", pd.DataFrame(manifest).to_csv(index=False))
    atomic_write_json(root / "timings.json", seconds)
