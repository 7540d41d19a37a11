"""``bench analysis``: memorisation figures."""


from __future__ import annotations

from typing import Any

from workbench.app.presets import load_preset, preset_folder
from workbench.app.report import REPO
from workbench.systems.pdiff.experiment import memorisation_experiment


def bench_analysis(preset: str, device: str = "cpu") -> dict[str, Any]:
    """Memorisation figures for the preset's p-diff generator (fitted or loaded from runs/<preset>): the experiment
    of notebook 04 (:func:`~workbench.systems.pdiff.experiment.memorisation_experiment`)."""
    p = load_preset(preset)
    settings = p.bench.get("analysis", {})
    key = settings.get("zoo", "mlp_dense")
    run = memorisation_experiment(key, p.zoo(key), p.pdiff_config(), REPO / "runs" / preset_folder(preset),
                                  n_samples=int(settings.get("n_samples", 100)), seed=0, device=device)
    a, zoo = run.analysis, run.zoo
    iou = a.iou
    r = lambda v: round(float(v), 4)  # noqa: E731
    return {
        "preset": preset, "zoo": key, "n_members": len(zoo), "n_samples": len(a.sets["generated"]),
        "iou_within_original": r(iou.loc["original", "iou_within"]),
        "iou_within_generated": r(iou.loc["generated", "iou_within"]),
        "iou_generated_to_nearest_original": r(iou.loc["generated", "max_iou_to_original_mean"]),
        "iou_original_to_nearest_other": r(iou.loc["original", "max_iou_to_original_mean"]),
        "iou_noise_to_nearest_original": r(iou.loc["noise", "max_iou_to_original_mean"]),
        "iou_generated_to_nearest_original_median": r(iou.loc["generated", "max_iou_to_original_median"]),
        "iou_original_to_nearest_other_median": r(iou.loc["original", "max_iou_to_original_median"]),
        "novelty_threshold": r(a.threshold),
        "novelty_matched_accuracy": {k: r(a.matched.loc[k, "novel_mean_accuracy"])
                                     for k in ("generated", "noise", "gaussian", "finetuned")},
        "novelty_matched_fraction": {k: r(a.matched.loc[k, "fraction_novel"])
                                     for k in ("generated", "noise", "gaussian", "finetuned")},
        "l2_generated_to_nearest_median": r(a.l2_nearest_median["generated"]),
        "l2_original_to_nearest_other_median": r(a.l2_nearest_median["original"]),
        "l2_gaussian_to_nearest_median": r(a.l2_nearest_median["gaussian"]),
        "cosine_generated_to_nearest_median": float(a.cosine_generated_median),
        "seconds_analysis": round(run.seconds["analysis"], 2),
        "seconds_total": round(run.seconds["total"], 2),
    }
