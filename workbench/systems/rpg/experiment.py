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

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch

from workbench.core.device import DeviceLike
from workbench.core.io import atomic_write_csv
from workbench.core.paths import seeded_name
from workbench.core.timing import Stopwatch
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.evaluation.tables import evaluation_table
from workbench.generator.latent_diffusion import PDiff, PDiffConfig, fit_or_load, seeded_pdiff_config
from workbench.systems.pdiff.seeds import SeedsResult, seeds_evaluation
from workbench.systems.rpg.evaluation import (
    RidgeCodeRegressor,
    aligned_novelty,
    summarise_task_codes,
    task_code_table,
)
from workbench.systems.rpg.generator import RPG, RPGConfig, fit_or_load_rpg
from workbench.systems.rpg.scale import scale_curve
from workbench.systems.rpg.task_zoo import (
    TaskCodeZoo,
    TaskCodeZooConfig,
    code_labels,
    code_name,
    collect_task_code_zoo,
    hamming,
    parse_code,
)
from workbench.zoo import Zoo, ZooConfig
from workbench.zoo.collection import collect_all

__all__ = ["RPGSeedsRun", "rpg_seeds_experiment", "RPGTaskCodeRun", "rpg_task_code_experiment", "RPGResults",
           "rpg_experiment", "summarise_rpg", "rpg_reading", "task_code_probe", "RPGLargestRun",
           "rpg_largest_experiment", "ABLATIONS", "ablation_config", "rpg_ablation_experiment", "RPG_STATES",
           "RPG_NO_STATES", "PDIFF_ALIGNED", "seeded_rpg_config", "seeded_task_zoo_config", "sample_code"]


#: The generators of the seeds experiment (table rows "generated (<name>)").
RPG_STATES, RPG_NO_STATES, PDIFF_ALIGNED = "RPG", "RPG, no permutation states", "p-diff, aligned"


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
    generators: dict[str, RPG | PDiff]   # RPG_STATES, RPG_NO_STATES, PDIFF_ALIGNED
    samples: dict[str, torch.Tensor]
    result: SeedsResult                  # notebook 03's evaluation (table rows "generated (<name>)"), IoU, barriers
    aligned_novelty: pd.DataFrame        # L2 to the nearest aligned original, per method
    seconds: dict[str, float]


def rpg_seeds_experiment(key: str, zoo_config: ZooConfig, config: RPGConfig, root: str | Path, *,
                         pdiff_config: PDiffConfig | None = None, n_samples: int = 100, seed: int = 0,
                         progress: bool = False, device: DeviceLike = "cpu") -> RPGSeedsRun:
    """Entire models from independent seeds: RPG with a permutation state per seed and without any, beside the
    aligned p-diff generator (``pdiff_config``; skipped when None), evaluated like notebook 03 (originals, soups and
    Gaussians before/after alignment, noise-added, fine-tuned, IoU novelty) plus novelty in the aligned frame."""
    root, watch = Path(root), Stopwatch()
    with watch("zoo"):
        zoo = collect_all({key: zoo_config}, root, seed=seed, progress=progress, device=device)[key]
    vectors = zoo.vectors()
    cfg = seeded_rpg_config(config, seed)
    variants = {RPG_STATES: cfg, RPG_NO_STATES: replace(cfg, permutation_states=False)}
    gens: dict[str, RPG | PDiff] = {}
    samples: dict[str, torch.Tensor] = {}
    folder = root / "generators" / "rpg" / seeded_name(key, seed)
    for name, c in variants.items():
        slug = "states" if c.permutation_states else "no_states"
        with watch(f"fit_{slug}"):
            gens[name] = fit_or_load_rpg(vectors, zoo.spec, c, folder / slug, progress=progress, device=device)
        with watch(f"sample_{slug}"):
            samples[name] = gens[name].sample(n_samples, seed=seed)
    if pdiff_config is not None:
        pcfg = seeded_pdiff_config(pdiff_config, seed)
        with watch("fit_pdiff"):
            gens[PDIFF_ALIGNED] = fit_or_load(zoo, pcfg, folder / "pdiff_aligned", progress=progress, device=device)
        with watch("sample_pdiff"):
            samples[PDIFF_ALIGNED] = gens[PDIFF_ALIGNED].sample(n_samples, sampler="ddpm", seed=seed)
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
                             progress: bool = False, device: DeviceLike = "cpu") -> RPGTaskCodeRun:
    """Unseen tasks: collect (or resume) the task-code zoo, fit (or load) RPG conditioned on the code over the seen
    codes' models, generate ``n_per_code`` models for every held-out code and for ``n_seen_eval`` seen codes, and
    compare them with the trained, nearest-code, soup and regressor models."""
    if config.cond_dim != 10:
        config = replace(config, cond_dim=10)
    root, watch = Path(root), Stopwatch()
    with watch("zoo"):
        zoo = collect_task_code_zoo(seeded_task_zoo_config(zoo_config, seed), root / "zoos" / seeded_name(key, seed),
                                    progress=progress, device=device)
    seen = zoo.seen_ids()
    vectors = zoo.vectors()[seen]
    cfg = seeded_rpg_config(config, seed)
    # every code's model is fine-tuned from the same pretrained model: one source, one permutation state
    with watch("fit"):
        gen = fit_or_load_rpg(vectors, zoo.spec, cfg, root / "generators" / "rpg" / seeded_name(key, seed),
                              sources=[0] * len(seen), conditions=zoo.codes[seen].float(), progress=progress,
                              device=device)
    with watch("regressor"):
        regressor = RidgeCodeRegressor.fit(zoo.codes[seen], vectors)
    ids = zoo.unseen_ids() + seen[:n_seen_eval]
    with watch("sample"):
        samples = _sample_codes(gen, zoo.codes[ids], [zoo.names[i] for i in ids], n_per_code, seed)
    with watch("evaluate"):
        ev = MemberEvaluator(zoo.model(), zoo.spec, probe=zoo.digits().x_test, device=device)
        table = task_code_table(zoo, samples, ids, regressor=regressor, evaluator=ev)
    summary = summarise_task_codes(table)
    folder = root / "generators" / "rpg" / seeded_name(key, seed)
    atomic_write_csv(folder / "task_codes.csv", table, index=True)
    return RPGTaskCodeRun(zoo, gen, regressor, samples, table, summary, {**watch.seconds, "total": watch.total})


def sample_code(run_or_gen: RPGTaskCodeRun | RPG, code: torch.Tensor, n: int = 8, seed: int = 0) -> torch.Tensor:
    """``n`` models for one code (the widget's call)."""
    gen = run_or_gen.generator if isinstance(run_or_gen, RPGTaskCodeRun) else run_or_gen
    return gen.sample(n, condition=torch.as_tensor(code, dtype=torch.float32), permutation_state=0, seed=seed)


@dataclass
class RPGResults:
    """Everything :func:`rpg_experiment` computes; ``summary`` holds the benchmark's figures."""

    seeds: RPGSeedsRun | None
    other_seeds: dict[str, RPGSeedsRun]  # the same comparison on further seeds zoos (e.g. notebook 03's MLPs)
    tasks: RPGTaskCodeRun | None
    scale: pd.DataFrame | None
    largest: "RPGLargestRun | None"
    ablations: pd.DataFrame | None       # one row per variant of the task-code generator (same reduced budget)
    capacity: pd.DataFrame | None        # one row per number of seeds K held by one generator
    summary: dict
    seconds: dict[str, float]


def _by_size(frame: pd.DataFrame, column: str) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for _, row in frame.iterrows():
        if row["ok"] and pd.notna(row.get(column)):
            out.setdefault(row["generator"], {})[int(row["params"])] = round(float(row[column]), 4)
    return out


def seeds_figures(run: RPGSeedsRun) -> dict:
    """One seeds run's headline figures (percent; L2 ratios to the originals' nearest-neighbour distance)."""
    t = run.result.table
    r = lambda v: round(float(v), 3)  # noqa: E731
    out = {"members": len(run.zoo), "params": run.zoo.spec.numel, "original_mean": r(t.loc["original", "mean"]),
           "generated_mean": r(t.loc[f"generated ({RPG_STATES})", "mean"]),
           "generated_no_permutation_state_mean": r(t.loc[f"generated ({RPG_NO_STATES})", "mean"]),
           "soup_aligned_mean": r(t.loc["soup (aligned)", "mean"]),
           "rpg_generator_params": sum(p.numel() for p in run.generators[RPG_STATES].net.parameters()),
           "aligned_l2_ratio": {k: r(v) for k, v in run.aligned_novelty["ratio_to_originals"].items()}}
    if f"generated ({PDIFF_ALIGNED})" in t.index:
        out["pdiff_aligned_mean"] = r(t.loc[f"generated ({PDIFF_ALIGNED})", "mean"])
    return out


def seeds_overview(results: "RPGResults") -> pd.DataFrame:
    """One row per seeds zoo (the main one first): members, parameters, mean test accuracy of the originals, both RPG
    variants, the aligned p-diff generator and the aligned soup (percent), and each generator's aligned-frame L2 to
    its nearest original as a ratio of the originals' own nearest-neighbour distance."""
    runs = ({results.seeds.key: results.seeds} if results.seeds is not None else {}) | dict(results.other_seeds)
    rows = {}
    for key, run in runs.items():
        f = seeds_figures(run)
        row = {k: v for k, v in f.items() if k != "aligned_l2_ratio"}
        row.update({f"L2 ratio {name}": v for name, v in f["aligned_l2_ratio"].items() if name != "original"})
        rows[key] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def summarise_rpg(seeds: RPGSeedsRun | None, tasks: RPGTaskCodeRun | None, scale: pd.DataFrame | None,
                  largest: "RPGLargestRun | None" = None,
                  other_seeds: Mapping[str, RPGSeedsRun] | None = None) -> dict:
    """The benchmark's figures (accuracies in percent) from whichever parts ran."""
    r = lambda v: round(float(v), 3)  # noqa: E731
    out: dict = {}
    if other_seeds:
        out["other_seeds"] = {key: seeds_figures(run) for key, run in other_seeds.items()}
    if largest is not None:
        t = largest.table
        out.update({"largest_model_params": largest.zoo.spec.numel, "largest_model_members": len(largest.zoo),
                    "largest_model_generated_mean": r(t.loc[f"generated ({RPG_STATES})", "mean"]),
                    "largest_model_original_mean": r(t.loc["original", "mean"]),
                    "largest_model_soup": r(t.loc["soup", "mean"]),
                    "largest_model_gaussian_mean": r(t.loc["gaussian (per position)", "mean"])})
    if seeds is not None:
        t, nov = seeds.result.table, seeds.result.novelty
        out.update({
            "seeds_members": len(seeds.zoo), "seeds_params": seeds.zoo.spec.numel,
            "seeds_original_mean": r(t.loc["original", "mean"]),
            "seeds_generated_mean": r(t.loc[f"generated ({RPG_STATES})", "mean"]),
            "seeds_generated_no_permutation_state_mean": r(t.loc[f"generated ({RPG_NO_STATES})", "mean"]),
            "seeds_selected_by_train_test_acc": r(t.loc[f"generated ({RPG_STATES})", "selected_by_train_test_acc"]),
            "seeds_iou_generated_to_nearest_original_median": r(nov.loc[f"generated ({RPG_STATES})",
                                                                        "max_iou_to_original_median"]),
            "seeds_iou_original_to_nearest_other_median": r(nov.loc["original", "max_iou_to_original_median"]),
            "seeds_aligned_l2_ratio": {k: r(v) for k, v in seeds.aligned_novelty["ratio_to_originals"].items()},
            "seeds_rpg_generator_params": sum(p.numel() for p in seeds.generators[RPG_STATES].net.parameters()),
        })
        if f"generated ({PDIFF_ALIGNED})" in t.index:
            out["seeds_pdiff_aligned_mean"] = r(t.loc[f"generated ({PDIFF_ALIGNED})", "mean"])
    if tasks is not None:
        s = tasks.summary
        if "unseen codes" in s.index:
            u = s.loc["unseen codes"]
            out.update({"unseen_codes": int(u["n_codes"]), "unseen_generated_mean": r(u["generated_mean"]),
                        "unseen_generated_selected_mean": r(u["generated_selected"]),
                        "unseen_trained_mean": r(u["trained"]), "unseen_nearest_code_mean": r(u["nearest_code"]),
                        "unseen_soup_mean": r(u["soup"]), "unseen_regressor_mean": r(u["regressor"]),
                        "unseen_majority_mean": r(u["majority"])})
        if "seen codes" in s.index:
            v = s.loc["seen codes"]
            out.update({"seen_codes_evaluated": int(v["n_codes"]), "seen_generated_mean": r(v["generated_mean"]),
                        "seen_trained_mean": r(v["trained"])})
    if scale is not None and len(scale):
        out["memory_mb"] = _by_size(scale, "peak_rss_mb")
        out["seconds_per_step"] = _by_size(scale, "seconds_per_step")
        out["seconds_per_model"] = _by_size(scale, "seconds_per_model")
        failed = scale[(scale["generator"] == "pdiff") & ~scale["ok"]]
        out["pdiff_failed_at"] = int(failed["params"].min()) if len(failed) else None
        out["pdiff_failure"] = str(failed.iloc[0]["error"]) if len(failed) else None
    return out


def rpg_experiment(*, seeds_zoo: ZooConfig, config: RPGConfig, pdiff_config: PDiffConfig | None, n_samples: int,
                   task_zoo: TaskCodeZooConfig, task_config: RPGConfig, n_per_code: int, n_seen_eval: int,
                   scale: dict | None, largest: dict | None = None, ablations: dict | None = None,
                   other_seeds: Mapping[str, dict] | None = None, capacity: dict | None = None,
                   run_dir: str | Path, seed: int = 0,
                   parts: tuple[str, ...] = ("seeds", "tasks", "scale", "largest", "ablations"),
                   progress: bool = False, device: DeviceLike = "cpu") -> RPGResults:
    """The RPG study of notebook 08 and ``bench rpg``: ``parts`` among "seeds", "tasks", "scale", "largest",
    "ablations" (which needs "tasks": it reuses the task-code zoo), "capacity" (:func:`rpg_capacity_experiment` on
    the seeds zoo; ``capacity``: its ``ks``, ``steps`` and ``n_samples``). ``other_seeds``: further seeds zoos for the
    seeds part, ``{key: {"zoo": ZooConfig, "pdiff_config": PDiffConfig | None, "n_samples": int}}``, each with the
    same RPG config (each zoo under ``run_dir/zoos/<key>``, its generators under ``run_dir/generators/rpg/<key>``)."""
    root, watch = Path(run_dir), Stopwatch()
    seeds_run = tasks_run = curve = None
    others: dict[str, RPGSeedsRun] = {}
    if "seeds" in parts:
        with watch("seeds"):
            seeds_run = rpg_seeds_experiment(seeds_zoo.name, seeds_zoo, config, root, pdiff_config=pdiff_config,
                                             n_samples=n_samples, seed=seed, progress=progress, device=device)
        for key, other in (other_seeds or {}).items():
            with watch(f"seeds_{key}"):
                others[key] = rpg_seeds_experiment(key, other["zoo"], config, root,
                                                   pdiff_config=other.get("pdiff_config"),
                                                   n_samples=int(other.get("n_samples", n_samples)), seed=seed,
                                                   progress=progress, device=device)
    if "tasks" in parts:
        with watch("tasks"):
            tasks_run = rpg_task_code_experiment(task_zoo, task_config, root, n_per_code=n_per_code,
                                                 n_seen_eval=n_seen_eval, seed=seed, progress=progress,
                                                 device=device)
    if "scale" in parts and scale:
        with watch("scale"):
            curve = scale_curve(scale["sizes"], scale["config"], scale["pdiff_config"], root / "scale",
                                n_members=scale["n_members"], steps=scale["steps"], budget_mb=scale["budget_mb"],
                                progress=progress)
        atomic_write_csv(root / "scale" / "curve.csv", curve)
    largest_run = None
    if "largest" in parts and largest:
        with watch("largest"):
            largest_run = rpg_largest_experiment(largest["zoo"], largest["config"], root,
                                                 n_samples=largest["n_samples"], seed=seed, progress=progress,
                                                 device=device)
    ablation_table = None
    if "ablations" in parts and ablations and tasks_run is not None:
        with watch("ablations"):
            ablation_table = rpg_ablation_experiment(
                tasks_run.zoo, task_config, root, ablations=tuple(ablations.get("variants", ABLATIONS)),
                steps=ablations.get("steps"), n_per_code=int(ablations.get("n_per_code", 2)),
                n_codes=int(ablations.get("n_codes", 20)), seed=seed, progress=progress, device=device)
        atomic_write_csv(root / "generators" / "rpg" / "ablations" / "ablations.csv", ablation_table, index=True)
    capacity_table = None
    if "capacity" in parts and capacity:
        with watch("capacity"):
            zoo = (seeds_run.zoo if seeds_run is not None
                   else collect_all({seeds_zoo.name: seeds_zoo}, root, seed=seed, progress=progress,
                                    device=device)[seeds_zoo.name])
            capacity_table = rpg_capacity_experiment(zoo, config, root, ks=tuple(capacity.get("ks", (1, 2, 4, 8))),
                                                     steps=capacity.get("steps"),
                                                     n_samples=int(capacity.get("n_samples", 8)), seed=seed,
                                                     progress=progress, device=device)
        atomic_write_csv(root / "generators" / "rpg" / "capacity.csv", capacity_table, index=True)
    seconds = {**watch.seconds, "total": watch.total}
    for name, run in (("seeds", seeds_run), ("tasks", tasks_run), ("largest", largest_run)):
        if run is not None:
            seconds.update({f"{name}_{k}": v for k, v in run.seconds.items() if k != "total"})
    for key, run in others.items():
        seconds.update({f"seeds_{key}_{k}": v for k, v in run.seconds.items() if k != "total"})
    summary = summarise_rpg(seeds_run, tasks_run, curve, largest_run, others)
    if ablation_table is not None:
        summary["ablations"] = {k: {c: round(float(v), 3) for c, v in row.items()}
                                for k, row in ablation_table.iterrows()}
    if capacity_table is not None:
        summary["capacity"] = {int(k): {c: round(float(v), 3) for c, v in row.items()}
                               for k, row in capacity_table.iterrows()}
    return RPGResults(seeds_run, others, tasks_run, curve, largest_run, ablation_table, capacity_table, summary,
                      seconds)


def rpg_capacity_experiment(zoo: Zoo, config: RPGConfig, root: str | Path, *, ks: Sequence[int] = (1, 2, 4, 8),
                            steps: int | None = None, n_samples: int = 8, seed: int = 0,
                            progress: bool = False, device: DeviceLike = "cpu") -> pd.DataFrame:
    """How many independent seeds one RPG generator can hold: for each K, RPG with and without permutation states
    fitted on the zoo's first K members (the official code's permutation_{1,3,10,20} runs, at this machine's size),
    at ``steps`` training steps each. Rows K: the generator's shared size and its K states' beside the K × P numbers
    it would have to store,
    the originals' mean test accuracy, both variants' (``n_samples`` each, the states cycling through the K seeds),
    and the relative L2 error of the sample drawn with seed i's state to member i."""
    root = Path(root) / "generators" / "rpg" / seeded_name(f"capacity_{zoo.config.name}", seed)
    vectors, data = zoo.vectors(), zoo.data()
    ev = MemberEvaluator(zoo.model(), zoo.spec, probe=data.x_test, device=device)
    rows = []
    for k in ks:
        k = int(k)
        if not 1 <= k <= len(vectors):
            raise ValueError(f"capacity: K={k} seeds asked of a zoo of {len(vectors)} members; use 1..{len(vectors)}")
        cfg = ablation_config(seeded_rpg_config(config, seed), {}, steps)
        cfg = replace(cfg, train=replace(cfg.train, batch_size=min(cfg.train.batch_size, k)))
        states = [i % k for i in range(max(n_samples, k))]
        row: dict = {"K": k, "numbers_to_store": k * zoo.spec.numel,
                     "original_mean": float(ev(vectors[:k], data.x_test, data.y_test).accuracy.mean())}
        for slug, c in (("states", cfg), ("no_states", replace(cfg, permutation_states=False))):
            gen = fit_or_load_rpg(vectors[:k], zoo.spec, c, root / f"k{k}_{slug}", progress=progress, device=device)
            out = gen.sample(len(states), permutation_state=states if c.permutation_states else "random", seed=seed)
            row[f"{slug}_mean"] = float(ev(out, data.x_test, data.y_test).accuracy.mean())
            if c.permutation_states:
                # the shared network apart from the K learned states: what must store K × P numbers
                states_table = gen.net.prototyper.states.weight.numel()
                row["generator_params"] = sum(p.numel() for p in gen.net.parameters()) - states_table
                row["state_params"] = states_table
                own = vectors[states]
                row["states_rel_l2_to_own_seed"] = float(((out - own).norm(dim=1) / own.norm(dim=1)).median())
        rows.append(row)
    cols = ["K", "generator_params", "state_params", "numbers_to_store", "original_mean", "states_mean", "no_states_mean",
            "states_rel_l2_to_own_seed"]
    return pd.DataFrame(rows)[cols].set_index("K")


#: The reviewers' ablations, as changes to the task-code generator's config (the permutation state on/off is the
#: seeds experiment's own comparison). Each is refitted beside the full recipe at the same reduced budget.
ABLATIONS: dict[str, dict] = {
    "GRU": {"sequence": {"kind": "gru"}},
    "transformer": {"sequence": {"kind": "transformer", "n_heads": 4, "context": 64}},
    "no position embedding": {"position_embedding": False},
    "token size 64": {"token_size": 64},
    "tokens across layers": {"scheme": "flat"},
    "tokens per output channel": {"scheme": "channel"},
    "per-layer normalisation (RPG's)": {"normalise": "layer"},
    "no normalisation": {"normalise": "none"},
    "every parameter weighs the same": {"loss_weighting": "element"},
}


def ablation_config(config: RPGConfig, change: dict, steps: int | None) -> RPGConfig:
    """``config`` with one ablation's changes (nested ``sequence`` keys merged) at ``steps`` training steps."""
    d = config.to_dict()
    for k, v in change.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    if steps is not None:
        d["train"] = {**d["train"], "steps": int(steps)}
    return RPGConfig.from_dict(d)


def rpg_ablation_experiment(zoo: TaskCodeZoo, config: RPGConfig, root: str | Path, *,
                            ablations: Mapping[str, dict] | Sequence[str] = tuple(ABLATIONS), steps: int | None = None,
                            n_per_code: int = 2, n_codes: int = 20, seed: int = 0,
                            progress: bool = False, device: DeviceLike = "cpu") -> pd.DataFrame:
    """One row per variant ("full recipe" first): mean test accuracy of the generated models on ``n_codes`` held-out
    and ``n_codes`` seen codes, and fit seconds — every variant refitted at ``steps`` on the same seen codes."""
    if config.cond_dim != 10:
        config = replace(config, cond_dim=10)
    changes = {k: ABLATIONS[k] for k in ablations} if not isinstance(ablations, Mapping) else dict(ablations)
    variants = {"full recipe": ablation_config(config, {}, steps),
                **{k: ablation_config(config, v, steps) for k, v in changes.items()}}
    seen = zoo.seen_ids()
    vectors, codes = zoo.vectors()[seen], zoo.codes[seen].float()
    regressor = RidgeCodeRegressor.fit(zoo.codes[seen], vectors)
    ids = zoo.unseen_ids()[:n_codes] + seen[:n_codes]
    ev = MemberEvaluator(zoo.model(), zoo.spec, probe=zoo.digits().x_test)
    rows = []
    for name, cfg in variants.items():
        d = Path(root) / "generators" / "rpg" / "ablations" / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
                                                              + (f"_seed{seed}" if seed else ""))
        gen = fit_or_load_rpg(vectors, zoo.spec, seeded_rpg_config(cfg, seed), d, sources=[0] * len(seen),
                              conditions=codes, progress=progress, device=device)
        samples = _sample_codes(gen, zoo.codes[ids], [zoo.names[i] for i in ids], n_per_code, seed)
        table = task_code_table(zoo, samples, ids, regressor=regressor, evaluator=ev)
        s = summarise_task_codes(table)
        rows.append({"variant": name,
                     "unseen_generated_mean": float(s.loc["unseen codes", "generated_mean"]),
                     "unseen_selected_mean": float(s.loc["unseen codes", "generated_selected"]),
                     "seen_generated_mean": float(s.loc["seen codes", "generated_mean"]),
                     "fit_seconds": float(gen.seconds.get("fit", float("nan")))})
    return pd.DataFrame(rows).set_index("variant")


@dataclass
class RPGLargestRun:
    """What :func:`rpg_largest_experiment` computes: a real ≥ 1M-parameter model, generated whole."""

    zoo: Zoo
    generator: RPG
    samples: torch.Tensor
    table: pd.DataFrame                  # evaluation_table: originals, generated, soup, noise, Gaussian, fine-tuned
    seconds: dict[str, float]


def rpg_largest_experiment(zoo_config: ZooConfig, config: RPGConfig, root: str | Path, *, n_samples: int = 10,
                           seed: int = 0, progress: bool = False, device: DeviceLike = "cpu") -> RPGLargestRun:
    """Dense checkpoints of **all** parameters of one trained model (``zoo_config``, e.g. a 1M-parameter ConvNet),
    RPG fitted on them by streaming windows, ``n_samples`` models generated and evaluated beside every baseline."""
    root, watch = Path(root), Stopwatch()
    with watch("zoo"):
        zoo = collect_all({zoo_config.name: zoo_config}, root, seed=seed, progress=progress,
                          device=device)[zoo_config.name]
    with watch("fit"):
        gen = fit_or_load_rpg(zoo.vectors(), zoo.spec, seeded_rpg_config(config, seed),
                              root / "generators" / "rpg" / seeded_name(zoo_config.name, seed),
                              sources=[0] * len(zoo), progress=progress, device=device)
    with watch("sample"):
        samples = gen.sample(n_samples, permutation_state=0, seed=seed)
    with watch("evaluate"):
        table, _ = evaluation_table(zoo, {RPG_STATES: samples}, seed=seed, finetune_n=min(10, len(zoo)))
    return RPGLargestRun(zoo, gen, samples, table, {**watch.seconds, "total": watch.total})


def rpg_reading(results: RPGResults) -> list[str]:
    """Sentences computed from the figures (never written by hand): what each experiment found."""
    s, out = results.summary, []
    if results.seeds is not None:
        orig, gen = s["seeds_original_mean"], s["seeds_generated_mean"]
        nost = s["seeds_generated_no_permutation_state_mean"]
        ratio = s["seeds_aligned_l2_ratio"]
        out.append(f"Entire models from {s['seeds_members']} independent seeds ({s['seeds_params']:,} parameters): RPG "
                   f"with a permutation state per seed generates models at {gen:.1f} % mean test accuracy against "
                   f"{orig:.1f} % for the originals ({gen - orig:+.1f} pt); without permutation states "
                   f"{nost:.1f} %" + (", so the learned state is what keeps RPG from the permutation collapse."
                                      if gen > nost + 5 else ", so the state does not make the difference here."))
        if gen < orig - 3:
            n_gen = s["seeds_rpg_generator_params"]
            out.append(f"Given its permutation state, RPG draws every token independently, so a sample is a working "
                       f"model only where the generator has stored that seed's weights: its {n_gen:,} trainable "
                       f"parameters face {s['seeds_members']} × {s['seeds_params']:,} = "
                       f"{s['seeds_members'] * s['seeds_params']:,} numbers of distinct seeds.")
        if "seeds_pdiff_aligned_mean" in s:
            out.append(f"The aligned p-diff generator (weight matching, then PCA + MLP denoiser) reaches "
                       f"{s['seeds_pdiff_aligned_mean']:.1f} %.")
        parts = []
        for name, r in ratio.items():
            if name == "original":
                continue
            verdict = ("replays the zoo (its samples sit far closer to an original than the originals to one "
                       "another)" if r < 0.5 else "makes models as far from the zoo as its members are from each "
                       "other" if r >= 0.9 else "stays between a replay and a new model")
            parts.append(f"{name} at {r:.2f}× the originals' nearest-neighbour distance {verdict}")
        if parts:
            out.append("In the aligned frame: " + "; ".join(parts) + ".")
    for key, f in s.get("other_seeds", {}).items():
        line = (f"On {key} ({f['members']} seeds, {f['params']:,} parameters): RPG {f['generated_mean']:.1f} %, without "
                f"permutation states {f['generated_no_permutation_state_mean']:.1f} %, originals "
                f"{f['original_mean']:.1f} %")
        if "pdiff_aligned_mean" in f:
            line += f", aligned p-diff {f['pdiff_aligned_mean']:.1f} %"
        out.append(line + ".")
    if results.tasks is not None and "unseen_generated_mean" in s:
        g, t, reg = s["unseen_generated_mean"], s["unseen_trained_mean"], s["unseen_regressor_mean"]
        near, soup = s["unseen_nearest_code_mean"], s["unseen_soup_mean"]
        out.append(f"Unseen task codes ({s['unseen_codes']}): generated models score {g:.1f} % ({g / t:.2f}× the "
                   f"{t:.1f} % of a model trained on the code; selected by training accuracy "
                   f"{s['unseen_generated_selected_mean']:.1f} %), the nearest seen code's model {near:.1f} %, the "
                   f"soup of seen models {soup:.1f} % and a ridge regressor from code to weights {reg:.1f} %.")
        if reg >= g:
            out.append(f"A linear map from the code to the weights already does as well as the diffusion generator "
                       f"({reg:.1f} % ≥ {g:.1f} %): on this task family the unseen-task result does not need "
                       "diffusion.")
        else:
            out.append(f"The generator beats the linear code → weights map by {g - reg:.1f} pt.")
        if "seen_generated_mean" in s:
            out.append(f"On seen codes: generated {s['seen_generated_mean']:.1f} % vs trained "
                       f"{s['seen_trained_mean']:.1f} %.")
    if results.scale is not None and "memory_mb" in s:
        rpg_mem = s["memory_mb"].get("rpg", {})
        if rpg_mem:
            lo, hi = min(rpg_mem), max(rpg_mem)
            out.append(f"Memory: RPG's peak resident set goes from {rpg_mem[lo]:.0f} MiB at {lo:,} parameters to "
                       f"{rpg_mem[hi]:.0f} MiB at {hi:,} ({rpg_mem[hi] / rpg_mem[lo]:.2f}×)"
                       + (f"; the flat p-diff generator exceeded the memory budget at {s['pdiff_failed_at']:,} "
                          "parameters." if s.get("pdiff_failed_at") else "; p-diff finished every size."))
    if results.largest is not None:
        out.append(f"A real {s['largest_model_params']:,}-parameter model generated whole: "
                   f"{s['largest_model_generated_mean']:.1f} % vs {s['largest_model_original_mean']:.1f} % for its "
                   f"{s['largest_model_members']} dense checkpoints (soup {s['largest_model_soup']:.1f} %, "
                   f"per-position Gaussian {s['largest_model_gaussian_mean']:.1f} %).")
    if results.capacity is not None and len(results.capacity):
        c = results.capacity
        held = [int(k) for k, row in c.iterrows() if row["states_mean"] >= row["original_mean"] - 3]
        out.append("Seeds one generator holds (" + ", ".join(
            f"K={int(k)}: {row['states_mean']:.1f} % with states, {row['no_states_mean']:.1f} % without, originals "
            f"{row['original_mean']:.1f} %" for k, row in c.iterrows()) + "): "
            + (f"with permutation states RPG comes within 3 pt of the originals at K = "
               f"{', '.join(str(k) for k in held)}; the largest, K={max(held)}, means "
               f"{int(c.loc[max(held), 'numbers_to_store']):,} numbers to store in "
               f"{int(c.loc[max(held), 'generator_params']):,} shared generator parameters." if held
               else "with permutation states RPG comes within 3 pt of the originals at none of these K."))
    if results.ablations is not None and "full recipe" in results.ablations.index:
        a = results.ablations
        full = float(a.loc["full recipe", "unseen_generated_mean"])
        worst = a["unseen_generated_mean"].drop("full recipe").idxmin()
        out.append(f"Ablations (same reduced budget): the full recipe scores {full:.1f} % on unseen codes; the largest "
                   f"drop comes from '{worst}' ({float(a.loc[worst, 'unseen_generated_mean']):.1f} %).")
    return out


def task_code_probe(run: RPGTaskCodeRun, code: str | Sequence[int] | torch.Tensor, *, n: int = 8,
                    seed: int = 0) -> dict:
    """Generate ``n`` models for any 10-bit ``code`` and score them digit by digit beside the model trained on that
    code (when the zoo has it) and the nearest seen code's model (the widget's call).

    Returns ``{"code", "status" ("seen", "held out" or "new"), "nearest", "hamming", "per_digit" (rows 0–9:
    positive?, accuracy of each model family on that digit's test images), "accuracy" (overall, per family)}``."""
    zoo = run.zoo
    bits = torch.tensor(parse_code(code))
    name = code_name(bits.tolist())
    status = ("seen" if zoo.names.index(name) < zoo.n_seen else "held out") if name in zoo.names else "new"
    seen = zoo.seen_ids()
    dist = hamming(bits[None], zoo.codes[seen])[0].clone()
    if status == "seen":
        dist[seen.index(zoo.names.index(name))] = 10 ** 6
    near = seen[int(dist.argmin())]
    families = {"generated (mean of n)": sample_code(run, bits, n=n, seed=seed),
                f"nearest seen code {zoo.names[near]}": zoo.vectors()[[near]]}
    if status != "new":
        families["trained on this code"] = zoo.vectors(name)
    d = zoo.digits()
    y = code_labels(bits[None], d.y_test)[0]
    ev = MemberEvaluator(zoo.model(), zoo.spec, probe=d.x_test)
    per_digit = {"positive": [bool(b) for b in bits.tolist()]}
    overall = {}
    for fam, vecs in families.items():
        res = ev(vecs, d.x_test, y)
        right = (res.predictions == y[None]).float()                     # (m, n_test)
        per_digit[fam] = [100 * float(right[:, d.y_test == k].mean()) for k in range(10)]
        overall[fam] = float(res.accuracy.mean())
    frame = pd.DataFrame(per_digit, index=pd.Index(range(10), name="digit"))
    return {"code": name, "status": status, "nearest": zoo.names[near], "hamming": int(dist.min()),
            "per_digit": frame, "accuracy": pd.Series(overall, name="test accuracy (%)")}
