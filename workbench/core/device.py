"""One reading of the ``device`` argument every stage takes: ``"auto"`` (CUDA when present, else the CPU), None
(the CPU), or anything ``torch.device`` accepts — checked, with the fix named, before any work starts."""

from __future__ import annotations

import os

import torch

__all__ = ["resolve_device", "DeviceLike", "training_precision", "autocast_context", "PRECISIONS"]

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
    """The autocast dtype of generator training: ``"auto"`` (default; ``WORKBENCH_PRECISION`` overrides) is bf16
    on a CUDA device that supports it and float32 elsewhere (on a CPU bf16 is slower and less exact); ``"bf16"``
    asks for it on any device; ``"fp32"`` turns it off. None means float32 (no autocast)."""
    p = precision if precision is not None else os.environ.get("WORKBENCH_PRECISION", "auto")
    p = str(p).strip().lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision {precision!r} (WORKBENCH_PRECISION) must be one of {PRECISIONS}")
    if p == "fp32" or (p == "auto" and not (device.type == "cuda" and torch.cuda.is_bf16_supported())):
        return None
    return torch.bfloat16


def autocast_context(dtype: torch.dtype | None, device: torch.device):
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a no-op context for float32."""
    import contextlib

    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
