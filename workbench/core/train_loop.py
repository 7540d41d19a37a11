"""The shared training loop of the generators: seeded, resumable from its own checkpoint (safetensors + JSON),
progress bar, loss history written beside the weights, optional EMA of the weights (what the sampler uses).

Every step draws its randomness (minibatch, noise, timesteps) from a generator seeded by ``(seed, step)``, so a
resumed run continues exactly as an uninterrupted one would."""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn as nn

from workbench.core.config import JSONConfig
from workbench.core.data_parallel import (
    GradientPlan,
    barrier,
    broadcast_module,
    gradient_shards,
    process_group,
)
from workbench.core.device import autocast_context, training_precision
from workbench.core.faults import fault_point
from workbench.core.io import atomic_write_csv, load_tensor_metadata, load_tensors, save_tensors
from workbench.core.progress import tqdm

__all__ = ["LoopConfig", "train_module", "step_generator", "RunDirMismatchError", "read_history", "EMA"]


class EMA:
    """Exponential moving average of a module's parameters (the sampler uses the averaged copy)."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow ← decay · shadow + (1 − decay) · model."""
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), 1 - self.decay)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)


class RunDirMismatchError(ValueError):
    """A run directory holds the checkpoint of a different training job (other data or configuration)."""

def read_history(path: str | Path) -> list[dict] | None:
    """A loss-history CSV as records, or None (with a warning) when it is unreadable: the history is a record of
    the run, never needed to resume or sample, so a damaged one must not block anything."""

    try:
        frame = pd.read_csv(path)
        if "step" not in frame.columns:
            raise ValueError("no 'step' column")
        frame["step"] = pd.to_numeric(frame["step"], errors="raise")
        return frame.to_dict("records")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        warnings.warn(f"{path}: unreadable loss history ({e}); continuing without it", stacklevel=2)
        return None


@dataclass(frozen=True)
class LoopConfig(JSONConfig, name="training loop config"):
    """Optimisation settings of one generator stage (AdamW)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float | None = None
    grad_clip: float | None = 1.0
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                problems.append(f"{name}={v!r} must be an integer")
        if not problems:
            if self.steps < 0 or self.batch_size < 1 or self.checkpoint_every < 1 or self.log_every < 1:
                problems.append("steps >= 0, batch_size >= 1, checkpoint_every >= 1 and log_every >= 1 are required")
        for name, lo_open in (("lr", True), ("weight_decay", False)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or (v <= 0 if lo_open else v < 0):
                problems.append(f"{name}={v!r} must be a finite number {'> 0' if lo_open else '>= 0'}")
        if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float)) and 0 < self.ema_decay < 1):
            problems.append(f"ema_decay={self.ema_decay!r} must lie in (0, 1) (or be None for no EMA)")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            problems.append(f"grad_clip={self.grad_clip!r} must be > 0 (or None for no clipping)")
        if problems:
            raise ValueError("invalid training loop config: " + "; ".join(problems))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one training step."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def _save(path: Path, module: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None, step: int, cfg: LoopConfig,
          history: list[dict], fingerprint: str | None) -> None:
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.shadow.state_dict().items()})
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    save_tensors(path, tensors, metadata={"step": str(step), "config": json.dumps(cfg.to_dict()),
                                          "fingerprint": fingerprint or ""})
    atomic_write_csv(path.with_name(path.stem + "_history.csv"), pd.DataFrame(history))


def _restore(path: Path, module: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None) -> tuple[int, list[dict]]:
    tensors = load_tensors(path)
    step = int(load_tensor_metadata(path)["step"])
    module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None and any(k.startswith("ema.") for k in tensors):
        ema.shadow.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)
    hist_path = path.with_name(path.stem + "_history.csv")
    history = (read_history(hist_path) or []) if hist_path.exists() else []
    return step, [h for h in history if h["step"] <= step]


def train_module(
    module: nn.Module,
    loss_fn: Callable[..., tuple[torch.Tensor, dict]],
    cfg: LoopConfig,
    *,
    directory: str | Path | None = None,
    name: str = "model",
    progress: bool = True,
    desc: str | None = None,
    fingerprint: str | None = None,
    pass_step: bool = False,
    grad_shards: int | None = None,
    reentrant_loss: bool = True,
    precision: str | None = None,
) -> tuple[pd.DataFrame, EMA | None]:
    """Optimise ``module`` with AdamW on ``loss_fn(generator) -> (loss, logs)`` for ``cfg.steps`` steps.

    With ``directory``, a checkpoint ``<name>.safetensors`` is written every ``checkpoint_every`` steps and at the
    end; calling again resumes from it (or returns at once when it is complete). Returns the loss history and the
    EMA (if any), whose shadow module holds the averaged weights. ``fingerprint`` identifies what is trained on
    (data and model settings); a checkpoint written for another fingerprint is refused, never resumed.
    ``pass_step``: call ``loss_fn(generator, step)`` instead (losses whose data follow a schedule, e.g. RPG's
    sweeps over token windows, must know where a resumed run stands).

    Under ``accelerate launch`` (several processes) the loop is data-parallel: losses that call
    :func:`~workbench.core.data_parallel.shard_batch` compute only this process's slice of the step's batch, the
    gradients are summed over the processes, and only the main process writes checkpoints and shows progress; the
    result equals the one-process run up to floating point. ``grad_shards`` (default: ``WORKBENCH_GRAD_SHARDS``, else
    1) computes each step's gradient as that many slices of the batch, a multiple of the processes: with as many
    shards as processes, one process and N processes sum the very same slice gradients, so their runs are bit-identical
    (for two processes; the order of a larger all-reduce is the backend's). ``reentrant_loss=False``: the loss keeps
    state between calls (RPG's recurrent carry), so it may be called only once per step and process.
    ``precision``: ``"auto"`` (bf16 autocast on CUDA, float32 on the CPU), ``"bf16"`` or ``"fp32"``; see
    :func:`~workbench.core.device.training_precision`. The weights and the optimiser stay float32.
    """
    first = next(module.parameters(), None)
    group = process_group(first.device if first is not None else None)
    device = first.device if first is not None else torch.device("cpu")
    amp = training_precision(precision, device)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(module, cfg.ema_decay) if cfg.ema_decay else None
    start, history = 0, []
    path = Path(directory) / f"{name}.safetensors" if directory is not None else None
    if path is not None and path.exists():
        saved_cfg = json.loads(load_tensor_metadata(path).get("config", "{}"))
        if saved_cfg != json.loads(json.dumps(cfg.to_dict())):
            raise RunDirMismatchError(f"{path} was trained with a different configuration; use another run "
                                      "directory, or delete it to retrain")
        saved_fp = load_tensor_metadata(path).get("fingerprint", "")
        if fingerprint and saved_fp and saved_fp != fingerprint:
            raise RunDirMismatchError(f"{path} is the checkpoint of a training run on other data (fingerprint "
                                      f"{saved_fp[:12]} ≠ {fingerprint[:12]}); use another run directory, or "
                                      "delete it to retrain")
        start, history = _restore(path, module, opt, ema)
    broadcast_module(module, group)  # one starting point for every process, whatever each constructed
    if ema is not None:
        broadcast_module(ema.shadow, group)
    module.train()
    plan = GradientPlan(group, gradient_shards() if grad_shards is None else grad_shards, reentrant=reentrant_loss,
                        name=name)
    bar = tqdm(total=cfg.steps, initial=start, desc=desc or name, disable=not progress or not group.is_main,
               leave=False)
    for step in range(start, cfg.steps):
        opt.zero_grad(set_to_none=True)

        def compute(step: int = step) -> tuple[torch.Tensor, dict]:  # draws the step's batch afresh per call
            with autocast_context(amp, device):
                return loss_fn(step_generator(cfg.seed, step), *((step,) if pass_step else ()))

        if plan.plain:
            loss, logs = compute()
            loss.backward()
        else:  # this process's gradient shards of the step, summed over the processes: the job's loss everywhere
            loss, logs = plan.step(module, compute)
        if not torch.isfinite(loss):  # before the optimiser step: a non-finite loss never reaches the weights
            raise FloatingPointError(f"{name}: loss became {float(loss)} at step {step}; lower the learning rate "
                                     "or check the inputs for NaN")
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(module)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            history.append({"step": step + 1, "loss": float(loss.detach()), **logs})
            bar.set_postfix(loss=f"{float(loss.detach()):.4g}")
        bar.update(1)
        if path is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            if group.is_main:
                _save(path, module, opt, ema, step + 1, cfg, history, fingerprint)
            barrier(group)  # nobody runs ahead of a checkpoint it could be asked to resume from
        fault_point("train_step")
    bar.close()
    module.eval()
    return pd.DataFrame(history), ema
