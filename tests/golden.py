"""The seeded end-to-end runs behind the golden-band tests, shared by the tests (seed 0) and by
``tests/measure_bands.py`` (seeds 0–4, 1 and 2 threads), which measures the spread the bands are derived from.

``seed`` moves every random choice of a run at once: the zoo (initialisations, checkpoint trajectory), the
generator's training streams, the samples and the baselines. Seed 0 is exactly what the tests run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from workbench.app.presets import load_preset
from workbench.core.train_loop import LoopConfig
from workbench.evaluation.tables import evaluation_table
from workbench.generator.latent_diffusion import PDiff, PDiffConfig, fit_or_load
from workbench.systems.cond_pdiff.evaluation import cond_evaluation, summary
from workbench.systems.cond_pdiff.generator import CondPDiff, CondPDiffConfig
from workbench.systems.d2nwg.experiment import d2nwg_experiment
from workbench.systems.pdiff.seeds import seeds_evaluation
from workbench.systems.rpg.experiment import rpg_experiment
from workbench.zoo import collect
from workbench.zoo.lora.tasks import LoRAZooConfig, collect_lora_zoo

TINY_LORA = LoRAZooConfig(n_train=400, n_test=150, image_size=32, steps=40, keep_last=12, rank=2,
                          tasks=("even", "greater_than_4", "zero_or_six", "classify_0_4"), unseen=("odd",))


def _reseed(cfg: PDiffConfig, seed: int) -> PDiffConfig:
    """Move the training streams of both stages by ``seed`` (seed 0: unchanged)."""
    return replace(cfg, ae_train=replace(cfg.ae_train, seed=cfg.ae_train.seed + seed),
                   diffusion_train=replace(cfg.diffusion_train, seed=cfg.diffusion_train.seed + seed))


def pdiff_run(root: Path, seed: int = 0) -> tuple[Any, Any, dict[str, float]]:
    """The ci dense zoo, the ci p-diff generator, 30 DDIM samples and the evaluation table."""
    p = load_preset("ci")
    zoo = collect(p.zoo("mlp_dense").with_(seed=seed), root / "zoo", progress=False)
    gen = fit_or_load(zoo, _reseed(p.pdiff_config(), seed), root / "gen", progress=False)
    samples = gen.sample(30, sampler="ddim", steps=50, seed=seed)
    table, _ = evaluation_table(zoo, {"ddim": samples}, seed=seed)
    orig, g = table.loc["original"], table.loc["generated (ddim)"]
    metrics = {"original_mean": float(orig["mean"]), "generated_mean": float(g["mean"]),
               "generated_minus_original": float(g["mean"] - orig["mean"]), "within_1pt": float(g["within_1pt"])}
    return zoo, gen, {"samples": samples, "table": table, **metrics}


def seeds_run(root: Path, seed: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """The ci seeds zoo (members from seeds 100·seed + i), aligned and unaligned generators, 16 DDPM samples each."""
    p = load_preset("ci")
    zoo = collect(p.zoo("mlp_seeds").with_(seed=100 * seed), root / "zoo", progress=False)
    cfg = _reseed(p.pdiff_config("seeds"), seed)
    aligned = PDiff(cfg).fit(zoo, progress=False)
    unaligned = PDiff(replace(cfg, align="none")).fit(zoo, progress=False)
    samples = {"aligned": aligned.sample(16, sampler="ddpm", seed=seed),
               "unaligned": unaligned.sample(16, sampler="ddpm", seed=seed)}
    res = seeds_evaluation(zoo, samples, seed=seed)
    t, bar = res.table, res.barriers
    metrics = {"original_mean": float(t.loc["original", "mean"]),
               "soup_unaligned_mean": float(t.loc["soup (unaligned)", "mean"]),
               "soup_aligned_mean": float(t.loc["soup (aligned)", "mean"]),
               "generated_aligned_mean": float(t.loc["generated (aligned)", "mean"]),
               "generated_unaligned_mean": float(t.loc["generated (unaligned)", "mean"]),
               "gaussian_aligned_mean": float(t.loc["gaussian (aligned)", "mean"]),
               "aligned_minus_unaligned": float(t.loc["generated (aligned)", "mean"]
                                                - t.loc["generated (unaligned)", "mean"]),
               "aligned_minus_gaussian": float(t.loc["generated (aligned)", "mean"]
                                               - t.loc["gaussian (aligned)", "mean"]),
               "barrier_lower_fraction": float((bar["barrier_aligned"] < bar["barrier_unaligned"]).mean())}
    return zoo, aligned, {"samples": samples, "result": res, **metrics}


def cond_config(seed: int = 0) -> CondPDiffConfig:
    """The tests' Cond P-Diff generator (PCA latent, text condition, 400 diffusion steps)."""
    return CondPDiffConfig(pdiff=PDiffConfig(normaliser="task", autoencoder="pca", pca_components=16,
                                             latent_channels=1, unet_channels=16,
                                             diffusion_train=LoopConfig(steps=400, batch_size=32, lr=2e-3,
                                                                        seed=seed)))


def lora_zoo(root: Path, seed: int = 0):
    """The tests' tiny LoRA zoo (4 seen digit tasks, 1 unseen)."""
    return collect_lora_zoo(replace(TINY_LORA, seed=seed), root / "zoo", progress=False)


def cond_run(zoo, cache: Path, seed: int = 0) -> tuple[Any, dict[str, float]]:
    """Fit the tests' Cond P-Diff on ``zoo`` and evaluate 6 samples per task."""
    gen = CondPDiff(cond_config(seed), cache_dir=cache).fit(zoo, progress=False)
    res = cond_evaluation(zoo, gen, n_samples=6, seed=seed)
    s = summary(res)
    metrics = {k: float(s[k]) for k in ("seen_original_mean", "seen_generated_mean", "swap_generated_mean")}
    metrics["seen_generated_minus_original"] = metrics["seen_generated_mean"] - metrics["seen_original_mean"]
    metrics["swap_below_generated"] = metrics["seen_generated_mean"] - metrics["swap_generated_mean"]
    return gen, {"result": res, **metrics}


def d2nwg_run(root: Path, seed: int = 0) -> dict[str, float]:
    """Notebook 07's experiment on the ci preset for ``seed``: its summary's figures (percent)."""
    res = d2nwg_experiment(**load_preset("ci").d2nwg_inputs(), run_dir=root, seed=seed, progress=False)
    keys = ("unseen_generated_mean", "unseen_selected_by_support_mean", "unseen_prototype_mean",
            "unseen_fewshot_probe_mean", "unseen_random_mean", "unseen_retrieval_mean", "unseen_regressor_mean",
            "unseen_original_mean", "seen_generated_mean", "seen_selected_by_support_mean", "seen_original_mean")
    return {k: float(res.summary[k]) for k in keys}


#: Notebook 08's accuracy figures (the scale curve's memory and seconds are benchmarks, not bands)
RPG_KEYS = ("seeds_original_mean", "seeds_generated_mean", "seeds_generated_no_permutation_state_mean",
            "seeds_pdiff_aligned_mean", "unseen_generated_mean", "unseen_trained_mean", "unseen_nearest_code_mean",
            "unseen_regressor_mean", "unseen_soup_mean", "seen_generated_mean", "seen_trained_mean",
            "largest_model_generated_mean", "largest_model_original_mean")


def rpg_run(root: Path, seed: int = 0) -> dict[str, float]:
    """Notebook 08's experiment on the ci preset for ``seed``, without the scale curve: its accuracy figures."""
    p = load_preset("ci")
    parts = tuple(x for x in p.rpg_parts() if x != "scale")
    res = rpg_experiment(**p.rpg_inputs(), run_dir=root, seed=seed, parts=parts, progress=False)
    return {k: float(res.summary[k]) for k in RPG_KEYS}
