"""Data-parallel generator training under ``accelerate launch`` (or ``torchrun``).

Every process draws the *same* full batch from the step's seeded generator (minibatch indices, noise, timesteps),
keeps only its own contiguous slice of it (:func:`shard_batch`), and the weighted gradients are summed over the
processes before the optimiser step. So N processes compute the one-process gradient up to floating point, every
process takes the identical optimiser step, and the checkpoints (written by the main process only) resume either
way. A loss that does not call :func:`shard_batch` still trains correctly, on the full batch in every process.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn

__all__ = ["ProcessGroup", "process_group", "launched_world_size", "shard_batch", "batch_share", "step_scope", "StepShare",
           "GradientPlan", "gradient_shards", "broadcast_module", "barrier"]


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a data-parallel job: ``rank`` of ``world`` processes (0 of 1 when alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, results and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world > 1


def launched_world_size() -> int:
    """How many processes ``accelerate launch`` / ``torchrun`` started for this job (1 when run directly)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def process_group(device: torch.device | str | None = None) -> ProcessGroup:
    """The running job's process group; the first call in a launched job joins it through accelerate: gloo when
    ``device`` is the CPU (or None on a machine without CUDA), NCCL for CUDA."""
    if launched_world_size() <= 1:
        return ProcessGroup()
    dev = torch.device(device) if device is not None else None
    cpu = dev.type == "cpu" if dev is not None else not torch.cuda.is_available()
    try:
        from accelerate import PartialState
    except ImportError as e:  # pragma: no cover - accelerate is a dependency (through peft)
        raise RuntimeError("this process was started as one of several (WORLD_SIZE > 1) but accelerate is not "
                           "installed; pip install accelerate, or run with one process") from e
    state = PartialState(cpu=cpu)  # a singleton: the first call's backend holds for the job
    return ProcessGroup(rank=state.process_index, world=state.num_processes, local_rank=state.local_process_index)


@dataclass
class StepShare:
    """What this process contributed to one training step: its share of the batch (None: the full batch)."""

    group: ProcessGroup
    fraction: float | None = None
    batch: int | None = field(default=None, repr=False)

    @property
    def weight(self) -> float:
        """The factor of this process's loss in the job's loss (its batch share, or 1/world for a full batch)."""
        if not self.group.distributed:
            return 1.0
        return self.fraction if self.fraction is not None else 1.0 / self.group.world


_STEP: contextvars.ContextVar[StepShare | None] = contextvars.ContextVar("workbench_step_share", default=None)


@contextlib.contextmanager
def step_scope(group: ProcessGroup) -> Iterator[StepShare]:
    """The scope of one training step's loss: :func:`shard_batch` inside it slices for ``group``'s rank."""
    share = StepShare(group)
    token = _STEP.set(share)
    try:
        yield share
    finally:
        _STEP.reset(token)


def _bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_batch(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """This process's contiguous slice (along dim 0) of a batch that every process drew in full; the tensors
    unchanged outside a distributed training step. ``None`` entries pass through (e.g. no condition).

    Call it after every random draw of the step, so the draws (and a resumed run) match one process exactly."""
    share = _STEP.get()
    if share is None or not share.group.distributed:
        return tensors
    sizes = {t.shape[0] for t in tensors if t is not None}
    if len(sizes) != 1:
        raise ValueError(f"shard_batch needs tensors with one batch size, got sizes {sorted(sizes)}")
    n = sizes.pop()
    if share.batch is not None and share.batch != n:
        raise ValueError(f"one training step sharded batches of {share.batch} and {n} rows; a step's loss must "
                         "shard one batch size (its weight in the job's loss would be ambiguous)")
    if n < share.group.world:  # too few rows for every process: each computes the whole (tiny) batch
        return tensors
    lo, hi = _bounds(n, share.group.rank, share.group.world)
    share.batch, share.fraction = n, (hi - lo) / n
    return tuple(t[lo:hi] if t is not None else None for t in tensors)


def batch_share() -> float:
    """This process's share of the current step's sharded batch (1.0 outside a distributed step or before
    :func:`shard_batch`): a loss normalised by a whole-batch count divides by it to stay exact."""
    share = _STEP.get()
    return share.fraction if share is not None and share.fraction is not None else 1.0


def _flat_grads(params: list[nn.Parameter]) -> tuple[torch.Tensor, torch.Tensor]:
    grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device, dtype=p.dtype)
             for p in params]
    has = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype if grads else torch.float32,
                       device=params[0].device if params else "cpu")
    return torch.cat(grads) if grads else torch.zeros(0), has


def gradient_shards() -> int:
    """The number of gradient shards per step from ``WORKBENCH_GRAD_SHARDS`` (1 when unset)."""
    raw = os.environ.get("WORKBENCH_GRAD_SHARDS", "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"WORKBENCH_GRAD_SHARDS={raw!r} must be a whole number >= 1 (the slices each training "
                         "step's batch is cut into; a multiple of the number of processes)")
    return int(raw)


class GradientPlan:
    """How one training step's gradient is computed: the batch is cut into ``shards`` slices (at least one per
    process), this process computes the gradients of its consecutive slices, and one all-reduce sums them over
    the processes together with the weighted loss and logs."""

    def __init__(self, group: ProcessGroup, shards: int = 1, *, reentrant: bool = True, name: str = "model") -> None:
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ValueError(f"grad_shards={shards!r} must be a whole number >= 1")
        total = max(shards, group.world)
        if total % group.world:
            raise ValueError(f"grad_shards={shards} does not split over {group.world} processes: use a multiple of "
                             f"{group.world} (or 1)")
        per = total // group.world
        if per > 1 and not reentrant:
            raise ValueError(f"{name}: its loss keeps state between calls, so each process may compute one slice "
                             f"per step; use grad_shards <= {group.world} (the number of processes)")
        self.group, self.total, self.per = group, total, per
        self.mine = range(group.rank * per, (group.rank + 1) * per)

    @property
    def plain(self) -> bool:
        """One process, one slice: the ordinary loop (bitwise the same as before data parallelism existed)."""
        return self.total == 1

    def step(self, module: nn.Module, compute: Callable[[], tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
        """Backward over this process's slices (``compute`` draws the step's full batch afresh each time), then sum
        gradients, loss and numeric logs over the processes; returns the job's loss and logs."""
        loss_sum: torch.Tensor | None = None
        log_sums: dict[str, float] = {}
        logs: dict = {}
        for k in self.mine:
            with step_scope(ProcessGroup(rank=k, world=self.total)) as share:
                loss, logs = compute()
            w = share.weight
            (loss * w).backward()
            part = loss.detach().float() * w
            loss_sum = part if loss_sum is None else loss_sum + part
            for key, v in logs.items():
                # numbers, or the 0-d tensors a loss returns so that the plain loop need not sync every step
                if (isinstance(v, (int, float)) and not isinstance(v, bool)) or (torch.is_tensor(v) and v.ndim == 0):
                    log_sums[key] = log_sums.get(key, 0.0) + float(v) * w
        assert loss_sum is not None
        if not self.group.distributed:
            return loss_sum, {**logs, **log_sums}
        return _all_reduce_step(module, loss_sum, {**logs, **log_sums}, sorted(log_sums))


def _all_reduce_step(module: nn.Module, loss_sum: torch.Tensor, logs: dict, keys: list[str]
                     ) -> tuple[torch.Tensor, dict]:
    """One collective: the gradients (already weighted), which parameters have one, the loss and the logs."""
    import torch.distributed as dist

    params = [p for p in module.parameters() if p.requires_grad]
    flat, has = _flat_grads(params)
    extra = torch.tensor([float(loss_sum)] + [float(logs[k]) for k in keys], dtype=flat.dtype, device=flat.device)
    buf = torch.cat([flat, has, extra])
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    offset, n_params = 0, flat.numel()
    has_any = buf[n_params:n_params + len(params)] > 0
    for p, any_grad in zip(params, has_any.tolist()):
        k = p.numel()
        if any_grad:
            p.grad = buf[offset:offset + k].view_as(p).clone()
        offset += k
    sums = buf[n_params + len(params):].tolist()
    return torch.tensor(sums[0]), {**logs, **dict(zip(keys, sums[1:]))}


def broadcast_module(module: nn.Module, group: ProcessGroup) -> None:
    """Make every process hold the main process's parameters and buffers (after construction or a resume)."""
    if not group.distributed:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def barrier(group: ProcessGroup) -> None:
    """Wait until every process arrives (e.g. until the main process has published a checkpoint)."""
    if group.distributed:
        import torch.distributed as dist

        dist.barrier()
