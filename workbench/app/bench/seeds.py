"""``bench seeds``: entire models from independent seeds."""


from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from workbench.app.presets import load_preset
from workbench.systems.pdiff.generator import PDiff
from workbench.systems.pdiff.seeds import seeds_evaluation
from workbench.zoo import collect


def bench_seeds(preset: str) -> dict[str, Any]:
    """Entire models from independent seeds: zoo, generator with and without alignment, baselines, novelty."""


    p = load_preset(preset)
    settings = p.bench.get("seeds", {})
    key = settings.get("zoo", "mlp_seeds")
    n = int(settings.get("n_samples", 100))
    sampler = settings.get("sampler", "ddpm")  # DDIM's deterministic path leaves the zoo's span here (see README)
    steps = int(settings.get("steps", 50))
    cfg = p.pdiff_config("seeds")
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        zoo = collect(p.zoo(key), Path(tmp) / "zoo", progress=False)
        seconds["zoo"] = time.perf_counter() - t0
        samples = {}
        for name, c in (("aligned", cfg), ("unaligned", replace(cfg, align="none"))):
            t0 = time.perf_counter()
            gen = PDiff(c).fit(zoo, progress=False)
            seconds[f"fit_{name}"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            # DDPM always runs all T steps: the step count is DDIM's only
            samples[name] = gen.sample(n, sampler=sampler, steps=steps if sampler == "ddim" else None, seed=0)
            seconds[f"sample_{name}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = seeds_evaluation(zoo, samples, reference=cfg.align_reference, seed=0)
        seconds["evaluate"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_all
    t, nov = res.table, res.novelty
    r = lambda v: round(float(v), 3)  # noqa: E731
    r4 = lambda v: round(float(v), 4)  # noqa: E731
    return {
        "preset": preset, "zoo": key, "n_members": len(zoo), "n_samples": n,
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
