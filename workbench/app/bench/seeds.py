"""``bench seeds``: entire models from independent seeds."""


from __future__ import annotations

import tempfile
from typing import Any

from workbench.app.presets import load_preset
from workbench.systems.pdiff.experiment import seeds_experiment


def bench_seeds(preset: str, device: str = "cpu") -> dict[str, Any]:
    """Entire models from independent seeds: zoo, generator with and without alignment, baselines, novelty — the
    experiment of notebook 03's second part (:func:`~workbench.systems.pdiff.experiment.seeds_experiment`) in a
    fresh root."""
    p = load_preset(preset)
    settings = p.bench.get("seeds", {})
    key = settings.get("zoo", "mlp_seeds")
    n = int(settings.get("n_samples", 100))
    sampler = settings.get("sampler", "ddpm")  # DDIM's deterministic path leaves the zoo's span here (see README)
    steps = int(settings.get("steps", 50))
    with tempfile.TemporaryDirectory() as tmp:
        run = seeds_experiment(key, p.zoo(key), p.pdiff_config("seeds"), tmp, n_samples=n, sampler=sampler,
                               steps=steps, seed=0, device=device)
    res, seconds = run.result, run.seconds
    t, nov = res.table, res.novelty
    r = lambda v: round(float(v), 3)  # noqa: E731
    r4 = lambda v: round(float(v), 4)  # noqa: E731
    return {
        "preset": preset, "zoo": key, "n_members": len(run.zoo), "n_samples": n,
        "sampler": sampler if sampler == "ddpm" else f"ddim-{steps}",
        "original_mean": r(t.loc["original", "mean"]), "original_best": r(t.loc["original", "best"]),
        "generated_mean": r(t.loc["generated (aligned)", "mean"]),
        "generated_median": r(t.loc["generated (aligned)", "median"]),
        "generated_best": r(t.loc["generated (aligned)", "best"]),
        "generated_mean_unaligned": r(t.loc["generated (unaligned)", "mean"]),
        "selected_by_train_test_acc": r(t.loc["generated (aligned)", "selected_by_train_test_acc"]),
        "soup_unaligned": r(t.loc["soup (unaligned)", "mean"]), "soup_aligned": r(t.loc["soup (aligned)", "mean"]),
        "gaussian_unaligned_mean": r(t.loc["gaussian (unaligned)", "mean"]),
        "gaussian_aligned_mean": r(t.loc["gaussian (aligned)", "mean"]),
        "noise_mean": {k.split("=")[1]: r(t.loc[k, "mean"]) for k in t.index if k.startswith("noise")},
        "noise_iou_median": {k.split("=")[1]: r4(nov.loc[k, "max_iou_to_original_median"])
                             for k in nov.index if k.startswith("noise")},
        "finetuned_mean": r(t.loc["fine-tuned", "mean"]),
        "iou_generated_to_nearest_original_median": r4(nov.loc["generated (aligned)", "max_iou_to_original_median"]),
        "iou_original_to_nearest_other_median": r4(nov.loc["original", "max_iou_to_original_median"]),
        "barrier_unaligned_mean": r(res.barriers["barrier_unaligned"].mean()),
        "barrier_aligned_mean": r(res.barriers["barrier_aligned"].mean()),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "seconds_total": round(seconds["total"], 2),
    }
