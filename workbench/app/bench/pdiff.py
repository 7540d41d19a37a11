"""``bench pdiff``: the whole p-diff pipeline from scratch."""


from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from workbench.app.presets import load_preset
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.evaluation.tables import evaluation_table
from workbench.systems.pdiff.generator import PDiff
from workbench.zoo import collect


def bench_pdiff(preset: str) -> dict[str, Any]:
    """The whole p-diff pipeline from scratch (zoo, AE, diffusion, DDIM sampling, evaluation with baselines)."""


    p = load_preset(preset)
    settings = p.bench.get("pdiff", {})
    key = settings.get("zoo", "mlp_dense")
    n = int(settings.get("n_samples", 100))
    steps = int(settings.get("steps", 50))
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        zoo = collect(p.zoo(key), Path(tmp) / "zoo", progress=False)
        seconds["zoo"] = time.perf_counter() - t0
        gen = PDiff(p.pdiff_config())
        t0 = time.perf_counter()
        gen.fit_autoencoder(zoo.vectors(), progress=False)
        seconds["autoencoder"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        gen.fit_diffusion(vectors=zoo.vectors(), progress=False)
        seconds["diffusion"] = time.perf_counter() - t0
        gen.sample(4, steps=steps, seed=123)  # warm-up, not timed
        t0 = time.perf_counter()
        samples = gen.sample(100, sampler="ddim", steps=steps, seed=0)
        seconds["sample_100"] = time.perf_counter() - t0
        samples = samples[:n] if n <= 100 else gen.sample(n, sampler="ddim", steps=steps, seed=0)
        t0 = time.perf_counter()
        data = zoo.data()
        ev = MemberEvaluator(zoo.model(), zoo.spec, probe=data.x_test)
        recon = ev(gen.reconstruct(zoo.vectors()), data.x_test, data.y_test)
        table, _ = evaluation_table(zoo, {"ddim": samples}, evaluator=ev, seed=0)
        seconds["evaluate"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_all
    orig, gen_row = table.loc["original"], table.loc["generated (ddim)"]
    r = lambda v: round(float(v), 3)  # noqa: E731
    return {
        "preset": preset, "zoo": key, "n_members": len(zoo), "n_samples": len(samples), "sampler": f"ddim-{steps}",
        "original_best": r(orig["best"]), "original_mean": r(orig["mean"]), "original_median": r(orig["median"]),
        "generated_best": r(gen_row["best"]), "generated_mean": r(gen_row["mean"]),
        "generated_median": r(gen_row["median"]), "generated_min": r(gen_row["min"]),
        "generated_within_1pt": r(gen_row["within_1pt"]),
        "selected_by_train_test_acc": r(gen_row["selected_by_train_test_acc"]),
        "reconstruction_mean": r(recon.accuracy.mean()),
        "soup_acc": r(table.loc["soup", "mean"]),
        "gaussian_mean": r(table.loc["gaussian (per position)", "mean"]),
        "gaussian_selected_by_train_test_acc": r(table.loc["gaussian (per position)", "selected_by_train_test_acc"]),
        "noise_mean": {k.split("=")[1]: r(table.loc[k, "mean"]) for k in table.index if k.startswith("noise")},
        "finetuned_mean": r(table.loc["fine-tuned", "mean"]),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
