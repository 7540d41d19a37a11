"""One reading of the ``device`` argument every stage takes: ``"auto"`` (CUDA when present, else the CPU), None
(the CPU), or anything ``torch.device`` accepts — checked, with the fix named, before any work starts."""

from __future__ import annotations

import os

import torch

__all__ = ["resolve_device", "DeviceLike", "training_precision", "autocast_context", "PRECISIONS", "host_to_device"]

DeviceLike = str | torch.device | None


def resolve_device(device: DeviceLike = "cpu", *, name: str = "device") -> torch.device:
    """The torch device meant by ``device``: ``"auto"`` → ``cuda`` when available, else ``cpu``; None → ``cpu``.
    ``name``: how errors call the argument (``"--device"`` on the command line)."""
    if isinstance(device, torch.device):
        dev = device
    elif device is None:
        return torch.device("cpu")
    elif isinstance(device, str) and device.strip().lower() == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # one GPU per process under `accelerate launch` / torchrun (LOCAL_RANK is this process's GPU)
        local = os.environ.get("LOCAL_RANK")
        return torch.device("cuda", int(local) % torch.cuda.device_count()) if local and local.isdigit() \
            else torch.device("cuda")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError, TypeError):
            raise ValueError(f"{name} {device!r} is not a torch device: use 'auto', 'cpu', 'cuda', 'cuda:0' or "
                             "'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {device!r} asks for CUDA, but torch sees no CUDA device here (torch "
                         f"{torch.__version__}); use 'auto' (CUDA when present, else the CPU) or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{name} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); use "
                         f"'cuda:0'…'cuda:{torch.cuda.device_count() - 1}' or 'auto'")
    return dev


PRECISIONS = ("auto", "fp32", "bf16")


def training_precision(precision: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of generator training: ``"auto"`` (default; ``WORKBENCH_PRECISION`` overrides) is
    float32 on every device, ``"bf16"`` asks for bf16 autocast, ``"fp32"`` turns it off. None means float32.

    Why ``auto`` is float32 on CUDA too: on an H200 the default p-diff pipeline (``bench pdiff``) took 60.1 s with
    bf16 autocast and 39.3 s without (autoencoder 13.6 vs 5.4 s, diffusion 33.8 vs 24.2 s) at the same accuracy.
    These generators are launch-bound, so autocast's extra cast kernels cost more than bf16 arithmetic saves."""
    p = precision if precision is not None else os.environ.get("WORKBENCH_PRECISION", "auto")
    p = str(p).strip().lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision {precision!r} (WORKBENCH_PRECISION) must be one of {PRECISIONS}")
    if p in ("fp32", "auto"):
        return None
    return torch.bfloat16


def autocast_context(dtype: torch.dtype | None, device: torch.device):
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a no-op context for float32."""
    import contextlib

    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (drawn on the CPU, where the seeded generators live) on ``device``: on CUDA through pinned memory and
    an asynchronous copy, so a training step's noise and indices do not make the host wait for the GPU (a plain
    ``.to("cuda")`` from pageable memory synchronises every time); elsewhere ``t.to(device)``."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    # the caching host allocator keeps the pinned block until the copy that reads it has run
    return t.pin_memory().to(device, non_blocking=True)
