"""The RPG experiments, one function per question, shared by notebook 08 and ``bench rpg`` (their figures are equal
by construction):

- :func:`rpg_seeds_experiment` — entire models from independent seeds: RPG with and without permutation states
  beside the aligned p-diff generator of notebook 03; does a learned permutation state replace explicit alignment,
  and which generator makes new models rather than replaying the zoo (novelty in the aligned frame)?
- :func:`rpg_task_code_experiment` — unseen binary tasks from a 10-bit code: generated models vs the model trained on
  the code, the nearest seen code's model, the soup, and a regressor from code to weights.

Each works under ``root`` and resumes whatever is already there::

    root/zoos/<key>                        the zoos
    root/generators/rpg/<key>/<variant>/   the RPG generators (+ fit_key.json)
    root/generators/seeds/aligned/         the aligned p-diff generator (shared with notebook 03 when the run
                                           directory is the same)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from workbench.core.io import atomic_write_csv
from workbench.core.paths import seeded_name
from workbench.core.timing import Stopwatch
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.generator.latent_diffusion import PDiff, PDiffConfig, fit_or_load, seeded_pdiff_config
from workbench.systems.pdiff.seeds import SeedsResult, seeds_evaluation
from workbench.systems.rpg.evaluation import (
    RidgeCodeRegressor,
    aligned_novelty,
    summarise_task_codes,
    task_code_table,
)
from workbench.systems.rpg.generator import RPG, RPGConfig, fit_or_load_rpg
from workbench.systems.rpg.task_zoo import TaskCodeZoo, TaskCodeZooConfig, collect_task_code_zoo
from workbench.zoo import Zoo, ZooConfig
from workbench.zoo.collection import collect_all

__all__ = ["RPGSeedsRun", "rpg_seeds_experiment", "RPGTaskCodeRun", "rpg_task_code_experiment",
           "seeded_rpg_config", "seeded_task_zoo_config", "sample_code"]


def seeded_rpg_config(config: RPGConfig, seed: int) -> RPGConfig:
    """The config with its training stream moved by ``seed`` (0: unchanged)."""
    return config if not seed else replace(config, train=replace(config.train, seed=config.train.seed + seed))


def seeded_task_zoo_config(config: TaskCodeZooConfig, seed: int) -> TaskCodeZooConfig:
    """Another draw of codes and another pretrained model for ``seed`` (0: unchanged)."""
    return config if not seed else replace(config, seed=config.seed + 1000 * seed)


@dataclass
class RPGSeedsRun:
    """What :func:`rpg_seeds_experiment` computes for one independent-seeds zoo (accuracies in percent)."""

    key: str
    zoo: Zoo
    generators: dict[str, RPG | PDiff]   # "rpg", "rpg (no permutation state)", "p-diff (aligned)"
    samples: dict[str, torch.Tensor]
    result: SeedsResult                  # evaluation table, IoU novelty, barriers (notebook 03's evaluation)
    aligned_novelty: pd.DataFrame        # L2 to the nearest aligned original, per method
    seconds: dict[str, float]


def rpg_seeds_experiment(key: str, zoo_config: ZooConfig, config: RPGConfig, root: str | Path, *,
                         pdiff_config: PDiffConfig | None = None, n_samples: int = 100, seed: int = 0,
                         progress: bool = False) -> RPGSeedsRun:
    """Entire models from independent seeds: RPG with a permutation state per seed and without any, beside the
    aligned p-diff generator (``pdiff_config``; skipped when None), evaluated like notebook 03 (originals, soups and
    Gaussians before/after alignment, noise-added, fine-tuned, IoU novelty) plus novelty in the aligned frame."""
    root, watch = Path(root), Stopwatch()
    with watch("zoo"):
        zoo = collect_all({key: zoo_config}, root, seed=seed, progress=progress)[key]
    vectors = zoo.vectors()
    cfg = seeded_rpg_config(config, seed)
    variants = {"rpg": cfg, "rpg (no permutation state)": replace(cfg, permutation_states=False)}
    gens: dict[str, RPG | PDiff] = {}
    samples: dict[str, torch.Tensor] = {}
    folder = root / "generators" / "rpg" / seeded_name(key, seed)
    for name, c in variants.items():
        slug = "states" if c.permutation_states else "no_states"
        with watch(f"fit_{slug}"):
            gens[name] = fit_or_load_rpg(vectors, zoo.spec, c, folder / slug, progress=progress)
        with watch(f"sample_{slug}"):
            samples[name] = gens[name].sample(n_samples, seed=seed)
    if pdiff_config is not None:
        pcfg = seeded_pdiff_config(pdiff_config, seed)
        with watch("fit_pdiff"):
            gens["p-diff (aligned)"] = fit_or_load(zoo, pcfg, root / "generators" / "seeds" / seeded_name("aligned", seed),
                                                   progress=progress)
        with watch("sample_pdiff"):
            samples["p-diff (aligned)"] = gens["p-diff (aligned)"].sample(n_samples, sampler="ddpm", seed=seed)
    with watch("evaluate"):
        result = seeds_evaluation(zoo, samples, reference=0, seed=seed)
    with watch("aligned_novelty"):
        novelty = aligned_novelty(vectors, samples, zoo.spec, zoo.model(), aligned_originals=result.aligned,
                                  reference=0, seed=seed)
    atomic_write_csv(folder / "evaluation.csv", result.table, index=True)
    atomic_write_csv(folder / "aligned_novelty.csv", novelty, index=True)
    return RPGSeedsRun(key, zoo, gens, samples, result, novelty, {**watch.seconds, "total": watch.total})


@dataclass
class RPGTaskCodeRun:
    """What :func:`rpg_task_code_experiment` computes (accuracies in percent)."""

    zoo: TaskCodeZoo
    generator: RPG
    regressor: RidgeCodeRegressor
    samples: dict[str, torch.Tensor]     # per code name: the generated vectors
    table: pd.DataFrame                  # one row per evaluated code (held-out codes, then a sample of seen ones)
    summary: pd.DataFrame                # means over seen / unseen codes
    seconds: dict[str, float]


def _sample_codes(gen: RPG, codes: torch.Tensor, names: list[str], n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` models per code, all codes in one streamed sampling pass."""
    cond = codes.float().repeat_interleave(n, 0)
    vecs = gen.sample(len(cond), condition=cond, permutation_state=0, seed=seed)
    return {name: vecs[i * n:(i + 1) * n] for i, name in enumerate(names)}


def rpg_task_code_experiment(zoo_config: TaskCodeZooConfig, config: RPGConfig, root: str | Path, *,
                             n_per_code: int = 8, n_seen_eval: int = 50, key: str = "task_codes", seed: int = 0,
                             progress: bool = False) -> RPGTaskCodeRun:
    """Unseen tasks: collect (or resume) the task-code zoo, fit (or load) RPG conditioned on the code over the seen
    codes' models, generate ``n_per_code`` models for every held-out code and for ``n_seen_eval`` seen codes, and
    compare them with the trained, nearest-code, soup and regressor models."""
    if config.cond_dim != 10:
        config = replace(config, cond_dim=10)
    root, watch = Path(root), Stopwatch()
    with watch("zoo"):
        zoo = collect_task_code_zoo(seeded_task_zoo_config(zoo_config, seed), root / "zoos" / seeded_name(key, seed),
                                    progress=progress)
    seen = zoo.seen_ids()
    vectors = zoo.vectors()[seen]
    cfg = seeded_rpg_config(config, seed)
    # every code's model is fine-tuned from the same pretrained model: one source, one permutation state
    with watch("fit"):
        gen = fit_or_load_rpg(vectors, zoo.spec, cfg, root / "generators" / "rpg" / seeded_name(key, seed),
                              sources=[0] * len(seen), conditions=zoo.codes[seen].float(), progress=progress)
    with watch("regressor"):
        regressor = RidgeCodeRegressor.fit(zoo.codes[seen], vectors)
    ids = zoo.unseen_ids() + seen[:n_seen_eval]
    with watch("sample"):
        samples = _sample_codes(gen, zoo.codes[ids], [zoo.names[i] for i in ids], n_per_code, seed)
    with watch("evaluate"):
        ev = MemberEvaluator(zoo.model(), zoo.spec, probe=zoo.digits().x_test)
        table = task_code_table(zoo, samples, ids, regressor=regressor, evaluator=ev)
    summary = summarise_task_codes(table)
    folder = root / "generators" / "rpg" / seeded_name(key, seed)
    atomic_write_csv(folder / "task_codes.csv", table, index=True)
    return RPGTaskCodeRun(zoo, gen, regressor, samples, table, summary, {**watch.seconds, "total": watch.total})


def sample_code(run_or_gen: RPGTaskCodeRun | RPG, code: torch.Tensor, n: int = 8, seed: int = 0) -> torch.Tensor:
    """``n`` models for one code (the widget's call)."""
    gen = run_or_gen.generator if isinstance(run_or_gen, RPGTaskCodeRun) else run_or_gen
    return gen.sample(n, condition=torch.as_tensor(code, dtype=torch.float32), permutation_state=0, seed=seed)
