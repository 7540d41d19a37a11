"""``bench pdiff``: the whole p-diff pipeline from scratch."""


from __future__ import annotations

import tempfile
from typing import Any

from workbench.app.presets import load_preset
from workbench.core.timing import Stopwatch
from workbench.systems.pdiff.experiment import pdiff_experiment


def bench_pdiff(preset: str, device: str = "cpu") -> dict[str, Any]:
    """The whole p-diff pipeline from scratch (zoo, AE, diffusion, DDIM sampling, evaluation with baselines): the
    experiment of notebooks 02–03 (:func:`~workbench.systems.pdiff.experiment.pdiff_experiment`) in a fresh root."""
    p = load_preset(preset)
    settings = p.bench.get("pdiff", {})
    key = settings.get("zoo", "mlp_dense")
    n = int(settings.get("n_samples", 100))
    steps = int(settings.get("steps", 50))
    watch = Stopwatch()
    with tempfile.TemporaryDirectory() as tmp:
        # a batch of 100 is timed whatever n is: the first n of it are evaluated
        run = pdiff_experiment(key, p.zoo(key), p.pdiff_config(), tmp, n_samples=n, samplers=(f"ddim-{steps}",),
                               draw=100, seed=0, device=device)
    s = run.seconds
    seconds = {"zoo": s["zoo"], "autoencoder": run.generator.seconds["autoencoder"],
               "diffusion": run.generator.seconds["diffusion"], f"sample_{max(n, 100)}": s[f"sample (ddim-{steps})"],
               "evaluate": s["reconstruct"] + s["evaluate"], "total": watch.total}
    table, samples = run.table, run.samples[f"ddim-{steps}"]
    orig, gen_row = table.loc["original"], table.loc[f"generated (ddim-{steps})"]
    r = lambda v: round(float(v), 3)  # noqa: E731
    return {
        "preset": preset, "device": str(run.generator.device), "zoo": key, "n_members": len(run.zoo), "n_samples": len(samples), "sampler": f"ddim-{steps}",
        "original_best": r(orig["best"]), "original_mean": r(orig["mean"]), "original_median": r(orig["median"]),
        "generated_best": r(gen_row["best"]), "generated_mean": r(gen_row["mean"]),
        "generated_median": r(gen_row["median"]), "generated_min": r(gen_row["min"]),
        "generated_within_1pt": r(gen_row["within_1pt"]),
        "selected_by_train_test_acc": r(gen_row["selected_by_train_test_acc"]),
        "reconstruction_mean": r(run.reconstruction.accuracy.mean()),
        "soup_acc": r(table.loc["soup", "mean"]),
        "gaussian_mean": r(table.loc["gaussian (per position)", "mean"]),
        "gaussian_selected_by_train_test_acc": r(table.loc["gaussian (per position)", "selected_by_train_test_acc"]),
        "noise_mean": {k.split("=")[1]: r(table.loc[k, "mean"]) for k in table.index if k.startswith("noise")},
        "finetuned_mean": r(table.loc["fine-tuned", "mean"]),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
