"""``python -m workbench fit``: fit (or resume) the p-diff generator of one preset zoo, alone or data-parallel
under ``accelerate launch`` — the same folder the notebooks and ``bench pdiff`` use, so what it trains is loaded
there instead of refitted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from workbench.app.presets import is_preset_path, load_preset
from workbench.core.data_parallel import barrier, process_group
from workbench.core.device import DeviceLike, resolve_device
from workbench.core.io import read_json
from workbench.core.paths import seeded_name
from workbench.generator.latent_diffusion import PDiff, fit_or_load, seeded_pdiff_config
from workbench.zoo import Zoo
from workbench.zoo.collection import collect_all

__all__ = ["fit_preset_generator", "generator_directory"]


def generator_directory(run_dir: str | Path, key: str, seed: int = 0) -> Path:
    """Where the p-diff generator of zoo ``key`` lives in a run directory (as in notebooks 02–04)."""
    return Path(run_dir) / "generators" / "pdiff" / seeded_name(key, seed)


def fit_preset_generator(preset: str, key: str, *, run_dir: str | Path | None = None, seed: int = 0,
                         device: DeviceLike = "cpu", generator: str = "pdiff", progress: bool = True,
                         refit: bool = False) -> dict[str, Any]:
    """Collect (or resume) zoo ``key`` of ``preset``, then fit (or resume, or load) its p-diff generator.

    Under ``accelerate launch`` every process trains its share of each batch; only the main process collects the
    zoo, writes checkpoints and saves the generator, the others wait for it. Returns what was done (the same dict
    in every process)."""
    dev = resolve_device(device)
    group = process_group(dev)
    p = load_preset(preset)
    zoo_config = p.zoo(key)
    config = seeded_pdiff_config(p.pdiff_config(generator), seed)
    run = Path(run_dir) if run_dir is not None else Path("runs") / (p.name if is_preset_path(preset) else preset)
    root = run / "zoos" / seeded_name(key, seed)
    if group.is_main:  # one writer per zoo: the others open it once it is complete
        collect_all({key: zoo_config}, run, seed=seed, progress=progress)
    barrier(group)
    zoo = Zoo(root)
    directory = generator_directory(run, key, seed)
    done = (directory / "pdiff.json").exists() and read_json(directory / "pdiff.json").get("config") == \
        config.to_dict()
    t0 = time.perf_counter()
    if refit:
        gen = PDiff(config, device=dev).fit(zoo, run_dir=directory / "checkpoints", progress=progress)
        if group.is_main:
            gen.save(directory)
        barrier(group)
    else:  # loads what matches (and refuses a generator fitted on other data), else fits, resumes and saves
        gen = fit_or_load(zoo, config, directory, progress=progress, device=dev)
    action = "loaded" if done and not refit else "fitted"
    return {"zoo": key, "generator": str(directory), "action": action, "processes": group.world,
            "device": str(dev), "n_members": len(zoo), "seconds": round(time.perf_counter() - t0, 3),
            "stage_seconds": {k: round(v, 3) for k, v in gen.seconds.items()},
            "final_loss": {k: round(float(h["loss"].iloc[-1]), 6) for k, h in gen.history.items() if len(h)}}
