"""Benchmarks: each prints one JSON object as the last stdout line (``python -m workbench bench <name>``)."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from .atomic_io import atomic_write_csv
from .evaluate import evaluate
from .presets import load_preset, preset_folder

__all__ = ["BENCHMARKS", "run_benchmark", "matmul_peak_gflops", "bench_robustness"]


def matmul_peak_gflops(sizes: tuple[int, ...] = (512, 1024, 2048), seconds: float = 0.3) -> float:
    """Best fp32 square-matmul GFLOP/s of this machine over ``sizes`` (torch, current thread count)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        reps, t0 = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            dt = time.perf_counter() - t0
            if dt > seconds and reps >= 3:
                break
        best = max(best, 2 * n ** 3 * reps / dt / 1e9)
    return best


def bench_zoo(preset: str) -> dict[str, Any]:
    """Protocol 3 (independent seeds): vectorised trainer vs the one-at-a-time loop on the same members."""
    from .zoo.architectures import build_model
    from .zoo.training import TrainConfig, init_members, mlp_train_flops, train_loop, train_vectorized

    p = load_preset(preset)
    settings = p.bench.get("zoo", {})
    zcfg = p.zoo(settings.get("zoo", "mlp_seeds"))
    data = zcfg.data.load()
    train = TrainConfig(**{**zcfg.train.to_dict(), "epochs": int(settings.get("epochs", zcfg.train.epochs))})
    members = int(settings.get("members", 64))
    loop_members = int(settings.get("loop_members", members))
    seeds = list(range(zcfg.seed, zcfg.seed + members))
    peak_before = matmul_peak_gflops()

    # warm-up (thread pools, allocator) so neither side pays it
    train_vectorized(zcfg.arch, init_members(zcfg.arch, seeds[:4]), data.x_train[:512], data.y_train[:512],
                     TrainConfig(**{**train.to_dict(), "epochs": 1}))

    t0 = time.perf_counter()
    loop_states = []
    for s in seeds[:loop_members]:
        m = build_model(zcfg.arch, seed=s)
        train_loop(m, data.x_train, data.y_train, train)
        loop_states.append(m.state_dict())
    t_loop = time.perf_counter() - t0

    init = init_members(zcfg.arch, seeds)
    t0 = time.perf_counter()
    states, _ = train_vectorized(zcfg.arch, init, data.x_train, data.y_train, train)
    t_vec = time.perf_counter() - t0
    peak = max(peak_before, matmul_peak_gflops())

    flops_member = mlp_train_flops(zcfg.arch, train.epochs * len(data.y_train)) if zcfg.arch.name == "mlp3" else float("nan")
    from .params import ParamSpec

    template = build_model(zcfg.arch)
    spec = ParamSpec.select(template)
    vec = spec.flatten_batch(states)[:loop_members]
    loop_vec = spec.flatten_batch(loop_states)
    acc_vec = evaluate(vec, data, model=template, spec=spec).accuracy
    acc_loop = evaluate(loop_vec, data, model=template, spec=spec).accuracy
    loop_rate, vec_rate = loop_members / t_loop, members / t_vec
    vec_gflops = members * flops_member / t_vec / 1e9
    return {
        "preset": preset,
        "members": members,
        "loop_members": loop_members,
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "loop_members_per_s": round(loop_rate, 3),
        "vectorized_members_per_s": round(vec_rate, 3),
        "speedup": round(vec_rate / loop_rate, 2),
        "loop_gflops": round(loop_members * flops_member / t_loop / 1e9, 2),
        "vectorized_gflops": round(vec_gflops, 2),
        "matmul_peak_gflops": round(peak, 2),
        "fraction_of_peak": round(vec_gflops / peak, 3),
        "loop_test_acc_mean": round(float(np.mean(acc_loop)), 3),
        "vectorized_test_acc_mean": round(float(np.mean(acc_vec)), 3),
        "max_abs_acc_diff_loop_vs_vectorized": round(float(np.max(np.abs(acc_loop - acc_vec))), 3),
        "max_abs_weight_diff_loop_vs_vectorized": float((vec - loop_vec).abs().max()),
        "threads": torch.get_num_threads(),
        "seconds": {"loop": round(t_loop, 2), "vectorized": round(t_vec, 2)},
    }


BENCHMARKS: dict[str, Callable[[str], dict[str, Any]]] = {"zoo": bench_zoo}


def run_benchmark(name: str, preset: str) -> dict[str, Any]:
    """Run one benchmark by name; the name and the preset are checked before any work starts (a ValueError
    listing the valid benchmarks, or naming what is wrong with the preset)."""
    if not isinstance(name, str) or name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {sorted(BENCHMARKS)} "
                         "(python -m workbench bench <name> --preset <preset>)")
    load_preset(preset)  # an unknown or malformed preset fails here, not minutes into the benchmark
    return BENCHMARKS[name](preset)


def bench_pdiff(preset: str) -> dict[str, Any]:
    """The whole p-diff pipeline from scratch (zoo, AE, diffusion, DDIM sampling, evaluation with baselines)."""
    import tempfile
    from pathlib import Path

    from .evaluate import MemberEvaluator, evaluation_table
    from .generators.pdiff import PDiff
    from .zoo import collect

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


BENCHMARKS["pdiff"] = bench_pdiff


def bench_analysis(preset: str) -> dict[str, Any]:
    """Memorisation figures for the preset's p-diff generator (fitted or loaded from runs/<preset>)."""
    from pathlib import Path

    from .analysis import memorisation_analysis
    from .generators.pdiff import fit_or_load
    from .report import REPO
    from .zoo import collect

    t_all = time.perf_counter()
    p = load_preset(preset)
    settings = p.bench.get("analysis", {})
    key = settings.get("zoo", "mlp_dense")
    run = REPO / "runs" / preset_folder(preset)
    zoo = collect(p.zoo(key), run / "zoos" / key, progress=False, base_cache=run / "bases")
    gen = fit_or_load(zoo, p.pdiff_config(), Path(run) / "generators" / "pdiff" / key, progress=False)
    t0 = time.perf_counter()
    a = memorisation_analysis(zoo, gen, n_samples=int(settings.get("n_samples", 100)), seed=0)
    t_analysis = time.perf_counter() - t0
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
        "seconds_analysis": round(t_analysis, 2),
        "seconds_total": round(time.perf_counter() - t_all, 2),
    }


BENCHMARKS["analysis"] = bench_analysis


def bench_seeds(preset: str) -> dict[str, Any]:
    """Entire models from independent seeds: zoo, generator with and without alignment, baselines, novelty."""
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from .generators.pdiff import PDiff
    from .seeds import seeds_evaluation
    from .zoo import collect

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


BENCHMARKS["seeds"] = bench_seeds


def bench_cond(preset: str) -> dict[str, Any]:
    """Cond P-Diff from scratch: LoRA zoo (features + per-task fine-tuning), conditional generator, evaluation."""
    import json
    import tempfile
    from pathlib import Path

    from .cond_evaluation import cond_evaluation, summary
    from .generators.cond_pdiff import CondPDiff
    from .lora import collect_lora_zoo
    from .report import REPO

    from .lora_text import collect_text_lora_zoo

    p = load_preset(preset)
    settings = p.bench.get("cond", {})
    text = "text_zoo" in settings  # the NLP setting (glue preset) or the image setting
    zcfg = p.text_lora_zoo(settings["text_zoo"]) if text else p.lora_zoo(settings.get("zoo", "lora_digits"))
    n = int(settings.get("n_samples", 20))
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        zoo = (collect_text_lora_zoo if text else collect_lora_zoo)(zcfg, Path(tmp) / "zoo", progress=False)
        seconds["zoo"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        gen = CondPDiff(p.cond_config(), cache_dir=REPO / "runs" / "cache").fit(zoo, progress=False)
        seconds["fit"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = cond_evaluation(zoo, gen, n_samples=n, seed=0)
        seconds["evaluate"] = time.perf_counter() - t0
        out_dir = REPO / "runs" / preset_folder(preset) / "bench_cond"
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(out_dir / "per_task_seen.csv", res.seen, index=True)
        atomic_write_csv(out_dir / "per_task_unseen.csv", res.unseen, index=True)
        lora_params = zoo.spec.numel
    seconds["total"] = time.perf_counter() - t_all
    s = summary(res)
    r = lambda v: round(float(v), 3)  # noqa: E731
    out = {"preset": preset, **{k: (int(v) if k.startswith("n_") else r(v)) for k, v in s.items()},
           "lora_params": lora_params, "n_samples_per_task": n, "per_task_tables": str(out_dir),
           "seconds": {k: round(v, 2) for k, v in seconds.items()}, "seconds_total": round(seconds["total"], 2)}
    json.dumps(out)
    return out


BENCHMARKS["cond"] = bench_cond


def style_experiment(preset: str, root, *, progress: bool = False) -> dict[str, Any]:
    """The whole style experiment of a preset (shared by ``bench style`` and notebook 06): collect (or resume) the
    style zoo under ``root``, fit or load the style-image-conditioned generator, evaluate, interpolate, run the
    style-continuous generalisation test. Returns every result and the seconds per stage."""
    from pathlib import Path

    import itertools

    from .generators.cond_pdiff import CondPDiffConfig, fit_or_load_cond
    from .style import collect_style_zoo
    from .style_evaluation import continuous_generalisation, interpolation_frame, monotonic_fraction, style_evaluation

    p = load_preset(preset)
    st = p.generator_settings("style")
    root = Path(root)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    zoo = collect_style_zoo(p.style_zoo(st.get("zoo", "styles")), root / "zoo", progress=progress)
    seconds["zoo"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = fit_or_load_cond(zoo, p.style_config(), root / "generator", progress=progress)
    seconds["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = style_evaluation(zoo, gen, n_samples=int(st.get("n_samples", 8)), progress=progress)
    seconds["evaluate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # "all": every pair of styles — no choosing the pairs that interpolate well
    pairs = list(itertools.combinations(zoo.styles, 2)) if st["pairs"] == "all" else [tuple(x) for x in st["pairs"]]
    lambdas = [float(x) for x in np.linspace(0, 1, int(st.get("n_lambdas", 9)))]
    ends = {s: v[0] for s, v in res.generated.items()}
    interp, interp_images = interpolation_frame(zoo, gen, pairs, ends, lambdas)
    mono = {ref: monotonic_fraction(interp, reference=ref) for ref in ("styles", "ends")}
    seconds["interpolation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    c = st["continuous"]
    # its own generator config: per-task statistics do not exist for a held-out λ, and borrowing the nearest
    # training λ's would turn the test into a lookup, so the preset gives it one normalisation for all λs
    ccfg = CondPDiffConfig.from_dict(c["config"]) if "config" in c else p.style_config()
    cont, cont_gen = continuous_generalisation(zoo, ccfg, pair=tuple(c["pair"]),
                                               lambdas=[float(x) for x in np.linspace(0, 1, int(c["n_lambdas"]))],
                                               heldout=c["heldout"], per_lambda=int(c.get("per_lambda", 20)),
                                               n_samples=int(c.get("n_samples", 4)), progress=progress)
    seconds["continuous"] = time.perf_counter() - t0
    return {"zoo": zoo, "generator": gen, "result": res, "interpolation": interp, "interpolation_images": interp_images,
            "monotonic": mono, "continuous": cont, "continuous_generator": cont_gen, "lambdas": lambdas,
            "pairs": pairs, "seconds": seconds}


def bench_style(preset: str) -> dict[str, Any]:
    """Style-conditioned LoRA generation from scratch: style zoo, generator, metrics vs baselines, interpolation,
    style-continuous generalisation."""
    import json
    import tempfile

    from .report import REPO
    from .style_evaluation import summary

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ex = style_experiment(preset, tmp)
        out_dir = REPO / "runs" / preset_folder(preset) / "bench_style"
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(out_dir / "per_style.csv", ex["result"].table)
        atomic_write_csv(out_dir / "interpolation.csv", ex["interpolation"])
        atomic_write_csv(out_dir / "continuous.csv", ex["continuous"], index=True)
        zoo = ex["zoo"]
        n_styles, lora_params = len(zoo.styles), zoo.spec.numel
    seconds = {**ex["seconds"], "total": time.perf_counter() - t_all}
    s = summary(ex["result"])
    r = lambda v: round(float(v), 4)  # noqa: E731
    held = ex["continuous"][ex["continuous"]["split"] == "held out"]
    out = {"preset": preset, "n_styles": n_styles,
           "style_distance": {k: r(v) for k, v in s["style_distance"].items()},
           "psnr_to_target": {k: r(v) for k, v in s["psnr_to_target"].items()},
           "ssim_content": {k: r(v) for k, v in s["ssim_content"].items()},
           # to the styles' references (the strict reading); "_ends": to the endpoint LoRAs' own outputs
           "interpolation_monotonic_fraction": r(ex["monotonic"]["styles"].get("weight", float("nan"))),
           "interpolation_monotonic_fraction_latent": r(ex["monotonic"]["styles"].get("latent", float("nan"))),
           "interpolation_monotonic_fraction_ends": {k: r(v) for k, v in ex["monotonic"]["ends"].items()},
           "n_pairs": len(ex["pairs"]),
           "heldout_style_distance": {"generated": r(held["generated"].mean()),
                                      "nearest_train": r(held["nearest_train"].mean())},
           "lora_params": lora_params, "per_style_tables": str(out_dir),
           "seconds": {k: round(v, 2) for k, v in seconds.items()}, "seconds_total": round(seconds["total"], 2)}
    json.dumps(out)
    return out


BENCHMARKS["style"] = bench_style


def bench_robustness(preset: str) -> dict[str, Any]:
    """The bad-input matrix of ``workbench.robustness`` (the same cases ``tests/test_bad_inputs.py`` asserts), run
    once and counted from what happened; per-case outcomes go to ``runs/robustness/cases.csv``. The preset is not
    used: the matrix builds its own seconds-sized fixtures."""
    import pandas as pd

    from .report import REPO
    from .robustness import run_matrix, summarise
    from .robustness.fixtures import Fixtures

    t0 = time.perf_counter()
    fx = Fixtures()
    try:
        results = run_matrix(fx, progress=False)
    finally:
        fx.cleanup()
    out = summarise(results, time.perf_counter() - t0)
    table = pd.DataFrame([{"case": r.name, "group": r.group, "outcome": r.outcome, "seconds": round(r.seconds, 2),
                           "detail": r.detail[:300]} for r in results])
    atomic_write_csv(REPO / "runs" / "robustness" / "cases.csv", table)
    bad = table[~table["outcome"].isin(["clear_error", "handled"])]
    for _, r in bad.iterrows():
        print(f"[robustness] {r['outcome']}: {r['case']}: {r['detail'][:200]}", flush=True)
    out["groups"] = {g: int(n) for g, n in table.groupby("group").size().items()}
    return out


BENCHMARKS["robustness"] = bench_robustness
