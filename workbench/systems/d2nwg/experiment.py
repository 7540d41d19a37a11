"""D2NWG's experiment — what notebook 07 and ``bench d2nwg`` both run: collect (or resume) the dataset zoo, fit
(or load) the generator, evaluate it on the held-out and seen datasets beside every baseline, fine-tuning curves,
support-size and recipe ablations, and a computed reading."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from workbench.core.config import offset_seed
from workbench.core.device import DeviceLike
from workbench.core.paths import seeded_name
from workbench.core.timing import Stopwatch
from workbench.systems.d2nwg.baselines import EncodingRegressor, fit_regressor
from workbench.systems.d2nwg.evaluation import (
    finetune_table,
    reading,
    seen_table,
    shots_table,
    steps_to_match,
    summarise,
    unseen_table,
)
from workbench.systems.d2nwg.generator import D2NWG, D2NWGConfig, fit_or_load_d2nwg, stage1_settings
from workbench.systems.d2nwg.zoo import DatasetZoo, DatasetZooConfig, collect_dataset_zoo

__all__ = ["ABLATIONS", "D2NWGResults", "ablation_config", "d2nwg_experiment", "seeded_configs"]

ABLATIONS = ("no_contrastive", "mean_pooling", "beta0")


def seeded_configs(zoo_config: DatasetZooConfig, config: D2NWGConfig, seed: int) -> tuple[DatasetZooConfig,
                                                                                             D2NWGConfig]:
    """The run of seed ``seed`` (0: the preset's own): the heads' initialisations and minibatches and every
    generator stage move; the meta-dataset (its datasets and splits, ``data_seed``) stays the same."""
    if seed == 0:
        return zoo_config, config
    return offset_seed(zoo_config, seed, stride=1_000_003), replace(
        config, vae_train=offset_seed(config.vae_train, seed), align_train=offset_seed(config.align_train, seed),
        diffusion_train=offset_seed(config.diffusion_train, seed))


def _spread(names: list[str], limit: int | None) -> list[str]:
    """``limit`` names spread evenly over ``names`` (all of them for None)."""
    if limit is None or limit >= len(names):
        return list(names)
    return list(names[:: max(1, len(names) // max(1, limit))][:limit])


def ablation_config(config: D2NWGConfig, name: str) -> D2NWGConfig:
    """The generator config of one recipe ablation: no contrastive alignment (the encoder learns through the
    diffusion loss), mean-pooled features instead of the Set Transformer, or β = 0 (p-diff's AE)."""
    changes = {"no_contrastive": {"contrastive": False}, "mean_pooling": {"pooling": "mean"}, "beta0": {"beta": 0.0}}
    if name not in changes:
        raise ValueError(f"unknown ablation {name!r}: use some of {ABLATIONS}")
    return replace(config, **changes[name])


@dataclass
class D2NWGResults:
    """Everything the notebook shows and the benchmark prints."""

    zoo: DatasetZoo
    generator: D2NWG
    unseen: pd.DataFrame
    seen: pd.DataFrame
    curves: pd.DataFrame
    shots: pd.DataFrame
    ablations: pd.DataFrame
    summary: dict
    reading: list[str]
    heads: dict = field(repr=False, default_factory=dict)
    curves_adam: pd.DataFrame | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    shots_used: int = 5
    n_samples: int = 10
    regressor: EncodingRegressor | None = field(default=None, repr=False)


def d2nwg_experiment(zoo_config: DatasetZooConfig, config: D2NWGConfig, run_dir: str | Path, *, n_samples: int = 10,
                     shots: int = 5, shot_grid: Sequence[int] = (1, 5, 10),
                     finetune_steps: Sequence[int] = (0, 1, 5, 25, 100), finetune_lr: float = 0.01, ablations: Sequence[str] = ABLATIONS,
                     seen_limit: int | None = None, ablation_seen_limit: int | None = None,
                     ablation_steps: int | None = None, seed: int = 0,
                     progress: bool = True, device: DeviceLike = "cpu") -> D2NWGResults:
    """Run the whole D2NWG study in ``run_dir`` (``zoo/``, ``generator/``, ``ablations/<name>/``, with ``_seed<k>``
    for seed k > 0; everything resumes). ``seed`` moves the heads' and the generator's training (the datasets stay)
    and the support draws and samples. ``seen_limit`` evaluates that many seen datasets, spread evenly over them (the ci preset).
    ``device``: where the zoo's heads and the generators train and sample (default the CPU)."""
    run_dir = Path(run_dir)
    watch = Stopwatch()
    zoo_config, config = seeded_configs(zoo_config, config, seed)
    with watch("zoo"):
        zoo = collect_dataset_zoo(zoo_config, run_dir / seeded_name("zoo", seed), progress=progress, device=device)
    with watch("generator"):
        gen = fit_or_load_d2nwg(zoo, config, run_dir / seeded_name("generator", seed), progress=progress,
                                device=device)
    seen_names = _spread(gen.seen, seen_limit)
    ablation_seen = _spread(seen_names, ablation_seen_limit)
    with watch("evaluation"):
        regressor = fit_regressor(gen, zoo, shots=shots, seed=seed)
        unseen, heads = unseen_table(gen, zoo, shots=shots, n_samples=n_samples, seed=seed, regressor=regressor)
        seen = seen_table(gen, zoo, shots=shots, n_samples=n_samples, seed=seed, datasets=seen_names)
    with watch("finetune"):
        curves = finetune_table(zoo, heads, steps=finetune_steps, lr=finetune_lr, seed=seed)
        # the same starts under Adam: how much a start saves depends on the optimiser (reported beside SGD)
        curves_adam = finetune_table(zoo, heads, steps=finetune_steps, lr=3e-3, seed=seed, optimizer="adam")
    with watch("shots"):
        shot_rows = shots_table(gen, zoo, shot_grid, n_samples=n_samples, seed=seed)
    summary = summarise(unseen, seen, curves, steps=finetune_steps)
    summary["finetune_steps_to_match_adam"] = steps_to_match(curves_adam)
    summary["finetune_mean_adam"] = summarise(unseen, seen, curves_adam, steps=finetune_steps)["finetune_mean"]
    rows = []
    if ablations:
        # a fair comparison: every row (the full recipe too) at the ablations' diffusion budget, scored on the same
        # held-out datasets and the same seen subset
        base = config if ablation_steps is None else replace(
            config, diffusion_train=replace(config.diffusion_train, steps=ablation_steps))
        for name in ("full", *ablations):
            with watch(f"ablation_{name}"):
                cfg = base if name == "full" else ablation_config(base, name)
                if name == "full" and base == config:
                    g = gen
                else:
                    same_vae = stage1_settings(cfg) == stage1_settings(config)  # the frozen β-VAE is shared
                    g = fit_or_load_d2nwg(zoo, cfg, run_dir / seeded_name("ablations", seed) / name,
                                          progress=progress, reuse_vae=gen if same_vae else None, device=device)
                u, _ = unseen_table(g, zoo, shots=shots, n_samples=n_samples, seed=seed)
                s = seen_table(g, zoo, shots=shots, n_samples=n_samples, seed=seed, datasets=ablation_seen)
            rows.append({"ablation": name, "unseen_generated_mean": float(u["generated_mean"].mean()),
                         "unseen_selected_by_support_mean": float(u["selected_by_support"].mean()),
                         "seen_generated_mean": float(s["generated_mean"].mean()),
                         "diffusion_steps": cfg.diffusion_train.steps})
    ablation_table = pd.DataFrame(rows, columns=["ablation", "unseen_generated_mean", "unseen_selected_by_support_mean",
                                                 "seen_generated_mean", "diffusion_steps"]).set_index("ablation")
    seconds = {**watch.seconds, "total": watch.total}
    summary = {**summary, "n_datasets_seen": len(zoo.names("seen"))}
    return D2NWGResults(zoo=zoo, generator=gen, unseen=unseen, seen=seen, curves=curves, shots=shot_rows,
                        ablations=ablation_table, summary=summary, reading=reading(summary, ablation_table),
                        heads=heads, curves_adam=curves_adam, seconds=seconds, shots_used=shots, n_samples=n_samples, regressor=regressor)
