"""The shared training loop of the generators: seeded, resumable from its own checkpoint (safetensors + JSON),
progress bar, loss history written beside the weights, optional EMA of the weights (what the sampler uses).

Every step draws its randomness (minibatch, noise, timesteps) from a generator seeded by ``(seed, step)``, so a
resumed run continues exactly as an uninterrupted one would."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
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
from workbench.core.device import autocast_context, host_to_device, training_precision
from workbench.core.faults import fault_point
from workbench.core.io import atomic_write_csv, load_tensor_metadata, load_tensors, save_tensors
from workbench.core.progress import tqdm

__all__ = ["LoopConfig", "SplitLoss", "train_module", "step_generator", "RunDirMismatchError", "read_history", "EMA"]


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
        shadow = list(self.shadow.parameters())
        if shadow:  # one multi-tensor launch on CUDA instead of one per parameter (the same lerp on the CPU)
            torch._foreach_lerp_(shadow, [p.detach() for p in model.parameters()], 1 - self.decay)
        buffers = list(self.shadow.buffers())
        if buffers:
            torch._foreach_copy_(buffers, list(model.buffers()))


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


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")


def compile_mode() -> str:
    """``WORKBENCH_COMPILE``: ``off`` (default) or a ``torch.compile`` mode for the trained networks on CUDA."""
    mode = os.environ.get("WORKBENCH_COMPILE", "off").strip().lower() or "off"
    if mode not in COMPILE_MODES:
        raise ValueError(f"WORKBENCH_COMPILE={mode!r} must be one of {COMPILE_MODES}")
    return mode


def compile_children(module: nn.Module, device: torch.device) -> list[nn.Module]:
    """Compile (in place) the trained module's direct children that hold parameters, when ``WORKBENCH_COMPILE``
    asks for it and the device is CUDA; returns them. The children, not the module, because the losses call
    methods of the module (``ae.loss`` → ``encoder``/``decoder``) that a compiled ``forward`` would not cover."""
    mode = compile_mode()
    if mode == "off" or device.type != "cuda":
        return []
    children = [m for m in module.children() if any(True for _ in m.parameters())] or [module]
    for m in children:
        m.compile(mode=mode, dynamic=False)
    return children


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


@dataclass(frozen=True)
class SplitLoss:
    """A training loss in two parts: ``draw(generator)`` → the step's randomness as CPU tensors (None where
    unused), drawn where the seeded generators live; ``compute(*draws on the device)`` → ``(loss, logs)``, pure
    device work. Called, it runs both, so any loop can use it; on CUDA the loop captures ``compute`` with the
    backward pass and the optimiser step in one CUDA graph and replays it with each step's fresh draws."""

    draw: Callable[[torch.Generator], tuple[torch.Tensor | None, ...]]
    compute: Callable[..., tuple[torch.Tensor, dict]]
    device: torch.device

    def __call__(self, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        return self.compute(*(None if t is None else host_to_device(t, self.device) for t in self.draw(generator)))


def cuda_graphs_enabled() -> bool:
    """``WORKBENCH_CUDA_GRAPHS``: ``on`` replays each CUDA training step of a :class:`SplitLoss` as one graph;
    ``off`` (default, until the graphed step has been measured on a GPU) runs it eagerly."""
    v = os.environ.get("WORKBENCH_CUDA_GRAPHS", "off").strip().lower()
    if v not in ("on", "off"):
        raise ValueError(f"WORKBENCH_CUDA_GRAPHS={v!r} must be 'on' or 'off'")
    return v == "on"


def _update(module: nn.Module, cfg: LoopConfig, opt: torch.optim.Optimizer, ema: EMA | None) -> None:
    """Clip, step, average: the part of a step after the backward pass (no host sync: it can be captured)."""
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
    opt.step()
    if ema is not None:
        ema.update(module)


def _note_bad(first_bad: torch.Tensor, loss: torch.Tensor, step: torch.Tensor | int) -> None:
    """Record (on the device, no sync) the first step whose loss is not finite."""
    first_bad.copy_(torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad))


def _eager_step(module, loss_fn, cfg, opt, ema, amp, device, plan, step, pass_step, first_bad, name):
    """One training step run op by op (the CPU, several processes, or a loss that is not a SplitLoss)."""
    opt.zero_grad(set_to_none=True)

    def compute(step: int = step) -> tuple[torch.Tensor, dict]:  # draws the step's batch afresh per call
        with autocast_context(amp, device):
            return loss_fn(step_generator(cfg.seed, step), *((step,) if pass_step else ()))

    if plan.plain:
        loss, logs = compute()
        loss.backward()
    else:  # this process's gradient shards of the step, summed over the processes: the job's loss everywhere
        loss, logs = plan.step(module, compute)
    if first_bad is None and not torch.isfinite(loss):  # before the optimiser step: never reaches the weights
        raise FloatingPointError(f"{name}: loss became {float(loss)} at step {step}; lower the learning rate "
                                 "or check the inputs for NaN")
    if first_bad is not None:
        _note_bad(first_bad, loss, step)
    _update(module, cfg, opt, ema)
    return loss, logs


class _GraphedStep:
    """A CUDA training step captured once and replayed: the small generators here are launch-bound (hundreds of
    tiny kernels per step, each launched from Python), so one graph launch per step removes most of the time.
    The first steps run eagerly on a side stream (PyTorch's recipe: the optimiser's state must exist before the
    capture); every step, graphed or not, uses that step's own draws, so the run is the eager one up to
    floating point."""

    WARMUP = 3

    def __init__(self, module, loss_fn: SplitLoss, cfg, opt, ema, amp, first_bad) -> None:
        self.module, self.loss_fn, self.cfg, self.opt, self.ema, self.amp = module, loss_fn, cfg, opt, ema, amp
        self.first_bad, self.device = first_bad, first_bad.device
        self.step_t = torch.zeros((), dtype=torch.long, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[torch.Tensor | None] = []
        self.out: tuple[torch.Tensor, dict] | None = None
        self.warm = 0
        self.side = torch.cuda.Stream(self.device)

    def _body(self, inputs) -> tuple[torch.Tensor, dict]:
        # autocast's cast cache must be off under capture (cached casts would outlive the graph's inputs)
        ctx = torch.autocast("cuda", dtype=self.amp, cache_enabled=False) if self.amp is not None \
            else contextlib.nullcontext()
        with ctx:
            loss, logs = self.loss_fn.compute(*inputs)
        loss.backward()
        _note_bad(self.first_bad, loss, self.step_t)
        _update(self.module, self.cfg, self.opt, self.ema)
        return loss, logs

    def run(self, step: int) -> tuple[torch.Tensor, dict]:
        draws = self.loss_fn.draw(step_generator(self.cfg.seed, step))
        if self.graph is not None:  # fresh draws into the captured inputs, then one launch
            for buf, d in zip(self.inputs, draws):
                if buf is not None:
                    buf.copy_(d.pin_memory(), non_blocking=True)
            self.step_t.fill_(step)
            self.graph.replay()
            return self.out
        inputs = [None if d is None else host_to_device(d, self.device) for d in draws]
        self.step_t.fill_(step)
        if self.warm < self.WARMUP:
            self.side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.side):
                self.opt.zero_grad(set_to_none=True)
                out = self._body(inputs)
            torch.cuda.current_stream(self.device).wait_stream(self.side)
            self.warm += 1
            return out
        self.inputs = inputs
        self.opt.zero_grad(set_to_none=True)  # the captured backward allocates the gradients it refills
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._body(self.inputs)
        self.graph.replay()  # capture records without running: this step still has to happen
        return self.out


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
    ``precision``: ``"auto"`` (float32: measured faster than bf16 for these networks), ``"bf16"`` or ``"fp32"``;
    see :func:`~workbench.core.device.training_precision`. The weights and the optimiser stay float32.

    On CUDA the loop avoids host syncs (the loss is checked on the device and read at log and checkpoint steps),
    uses fused AdamW, and, with ``WORKBENCH_CUDA_GRAPHS=on`` and a :class:`SplitLoss`, replays each step as one
    CUDA graph; ``WORKBENCH_COMPILE=<mode>`` compiles the module's children with ``torch.compile`` instead.
    """
    first = next(module.parameters(), None)
    group = process_group(first.device if first is not None else None)
    device = first.device if first is not None else torch.device("cpu")
    amp = training_precision(precision, device)
    on_cuda = device.type == "cuda"
    # fused AdamW on CUDA: one kernel for the whole update instead of a dozen per parameter group (the small
    # generators here are launch-bound); the CPU keeps the plain implementation, so its results are unchanged
    plan = GradientPlan(group, gradient_shards() if grad_shards is None else grad_shards, reentrant=reentrant_loss,
                        name=name)
    graphed = on_cuda and plan.plain and isinstance(loss_fn, SplitLoss) and not pass_step \
        and cuda_graphs_enabled() and compile_mode() == "off"
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            **({"fused": True, "capturable": graphed} if on_cuda else {}))
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
    bar = tqdm(total=cfg.steps, initial=start, desc=desc or name, disable=not progress or not group.is_main,
               leave=False)
    compiled = compile_children(module, device)
    # On the CPU the loss is checked every step (free there). On CUDA reading it would make the host wait for the
    # GPU every step, so the first non-finite step is recorded on the device and read when the loop logs or saves:
    # the error comes at most log_every steps later and names the step, and no checkpoint holds its weights.
    first_bad = torch.full((), -1, dtype=torch.long, device=device) if on_cuda else None
    graph = _GraphedStep(module, loss_fn, cfg, opt, ema, amp, first_bad) if graphed else None
    for step in range(start, cfg.steps):
        if graph is not None:
            loss, logs = graph.run(step)
        else:
            loss, logs = _eager_step(module, loss_fn, cfg, opt, ema, amp, device, plan, step, pass_step, first_bad, name)
        logging = step % cfg.log_every == 0 or step == cfg.steps - 1
        saving = path is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps)
        if first_bad is not None and (logging or saving) and int(first_bad) >= 0:
            raise FloatingPointError(f"{name}: the loss became non-finite at step {int(first_bad)} (found at step "
                                     f"{step}); lower the learning rate or check the inputs for NaN")
        if logging:
            history.append({"step": step + 1, "loss": float(loss.detach()),
                            **{k: float(v) for k, v in logs.items()}})
            bar.set_postfix(loss=f"{history[-1]['loss']:.4g}")
        bar.update(1)
        if saving:
            if group.is_main:
                _save(path, module, opt, ema, step + 1, cfg, history, fingerprint)
            barrier(group)  # nobody runs ahead of a checkpoint it could be asked to resume from
        fault_point("train_step")
    bar.close()
    if graph is not None:
        module.zero_grad(set_to_none=True)  # the graph's static gradients go with it
    for m in compiled:  # sampling runs eager: its batch shapes differ from training's and would recompile
        m._compiled_call_impl = None
    module.eval()
    return pd.DataFrame(history), ema
