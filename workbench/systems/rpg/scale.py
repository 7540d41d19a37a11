"""Scale: peak memory and time per training step and per generated model of RPG and of the flat p-diff generator as
the generated model grows (10k → 10M+ parameters).

Every point runs in a child process under a memory budget (:func:`workbench.core.memory_budget.run_with_memory_budget`):
a generator that does not scale *fails* by exceeding the budget — reported, never the out-of-memory killer taking the
benchmark down — and the peak resident set is the child's own. The zoos are **synthetic** (a random base model plus
small per-member perturbations, like dense checkpoints), written once to ``.npy`` files: the curve measures the
machinery, not what the generated models are worth (the real models of the notebook say that).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from workbench.core.memory_budget import peak_rss_mb, run_with_memory_budget
from workbench.core.params import ParamSpec
from workbench.generator.latent_diffusion import PDiff, PDiffConfig
from workbench.systems.rpg.generator import RPG, RPGConfig
from workbench.systems.rpg.vectors import NpyVectors, write_npy_vectors

__all__ = ["synthetic_spec", "write_synthetic_zoo", "scale_curve", "rpg_point", "pdiff_point"]


def synthetic_spec(n_params: int, width: int = 1024) -> ParamSpec:
    """Tensors shaped like an MLP's — (width, width) weights, each followed by a (width,) bias — the last weight cut
    to reach exactly ``n_params`` parameters."""
    if n_params < 2:
        raise ValueError(f"n_params must be >= 2, got {n_params}")
    width = max(1, min(width, int(math.sqrt(n_params))))
    names, shapes, left, i = [], [], n_params, 0
    while left > 0:
        block = width * width + width
        if left >= block:
            names += [f"fc{i}.weight", f"fc{i}.bias"]
            shapes += [(width, width), (width,)]
            left -= block
        else:
            rows = max(1, left // (width + 1))
            if rows * (width + 1) == left:
                names += [f"fc{i}.weight", f"fc{i}.bias"]
                shapes += [(rows, width), (rows,)]
            else:
                names.append(f"fc{i}.weight")
                shapes.append((left,))
            left = 0
        i += 1
    return ParamSpec(tuple(names), tuple(shapes))


def write_synthetic_zoo(path: str | Path, spec: ParamSpec, n_members: int, *, seed: int = 0) -> NpyVectors:
    """``n_members`` vectors: a random base (per-tensor scale 1/√fan-in) plus 1 % perturbations, written member by
    member (memory: one member)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.cat([torch.full((math.prod(s),), 1.0 / math.sqrt(s[-1] if s else 1)) for s in spec.shapes])
    base = torch.randn(spec.numel, generator=g) * scale

    def rows():
        for _ in range(n_members):
            yield (base + 0.01 * scale * torch.randn(spec.numel, generator=g))[None]

    return write_npy_vectors(path, rows(), n_members, spec.numel)


def rpg_point(path: str, spec: dict, config: dict, steps: int, threads: int = 2) -> dict:
    """(In a child) fit RPG on the zoo file for ``steps`` steps, streaming it, and generate one model."""
    torch.set_num_threads(threads)
    cfg = RPGConfig.from_dict(config)
    cfg = replace(cfg, train=replace(cfg.train, steps=steps, checkpoint_every=10 ** 9, log_every=10 ** 9))
    src = NpyVectors(path)
    gen = RPG(cfg)
    t0 = time.perf_counter()
    gen.fit(src, ParamSpec.from_dict(spec), progress=False)
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = gen.sample(1, seed=0)
    sample = time.perf_counter() - t0
    return {"seconds_per_step": gen.seconds.get("train", fit) / steps, "seconds_fit": fit,
            "seconds_per_model": sample, "finite": bool(torch.isfinite(out).all()), "peak_rss_mb": peak_rss_mb()}


def pdiff_point(path: str, config: dict, steps: int, threads: int = 2) -> dict:
    """(In a child) fit the flat p-diff generator (autoencoder + latent diffusion, ``steps`` each) on the whole zoo
    held in memory — as it must be — and generate one model."""
    torch.set_num_threads(threads)
    cfg = PDiffConfig.from_dict(config)
    cfg = replace(cfg, ae_train=replace(cfg.ae_train, steps=steps, checkpoint_every=10 ** 9, log_every=10 ** 9),
                  diffusion_train=replace(cfg.diffusion_train, steps=steps, checkpoint_every=10 ** 9,
                                          log_every=10 ** 9))
    vectors = torch.from_numpy(np.load(path))
    t0 = time.perf_counter()
    gen = PDiff(cfg).fit(vectors, progress=False)
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = gen.sample(1, sampler="ddim", seed=0)
    sample = time.perf_counter() - t0
    return {"seconds_per_step": fit / (2 * steps), "seconds_fit": fit, "seconds_per_model": sample,
            "finite": bool(torch.isfinite(out).all()), "peak_rss_mb": peak_rss_mb()}


def scale_curve(sizes: Sequence[int], rpg_config: RPGConfig, pdiff_config: PDiffConfig, root: str | Path, *,
                n_members: int = 8, steps: int = 5, budget_mb: float = 8192, timeout_s: float = 600,
                threads: int = 2, progress: bool = False) -> pd.DataFrame:
    """One row per (generator, size): peak memory (MiB), seconds per training step and per generated model, or the
    failure (``ok`` False, ``error``). p-diff is not run again above the first size where it failed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows, pdiff_failed = [], False
    for p in sizes:
        spec = synthetic_spec(int(p))
        path = root / f"synthetic_{p}.npy"
        if not path.exists():
            write_synthetic_zoo(path, spec, n_members, seed=int(p) % 9973)
        runs = [("rpg", rpg_point, (str(path), spec.to_dict(), rpg_config.to_dict(), steps, threads))]
        if not pdiff_failed:
            runs.append(("pdiff", pdiff_point, (str(path), pdiff_config.to_dict(), steps, threads)))
        for name, fn, args in runs:
            res = run_with_memory_budget(fn, *args, budget_mb=budget_mb, timeout_s=timeout_s, threads=threads)
            row = {"generator": name, "params": int(p), "ok": res.ok, "peak_rss_mb": res.peak_rss_mb,
                   "error": res.error, "exceeded_budget": res.exceeded_budget}
            if res.ok:
                row.update({k: v for k, v in res.value.items() if k != "peak_rss_mb"})
                row["peak_rss_mb"] = res.value["peak_rss_mb"]
            rows.append(row)
            if progress:
                print(f"{name} @ {p}: {'ok' if res.ok else res.error} ({row['peak_rss_mb']:.0f} MiB)", flush=True)
            if name == "pdiff" and not res.ok:
                pdiff_failed = True
        path.unlink()  # the biggest zoos are hundreds of MB: never kept
    return pd.DataFrame(rows)
