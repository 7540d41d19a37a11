"""``bench zoo``: the vectorised trainer vs the one-at-a-time loop, against this machine's matmul peak."""


from __future__ import annotations

from typing import Any

import numpy as np
import torch

from workbench.app.presets import load_preset
from workbench.core.params import ParamSpec
from workbench.core.timing import Stopwatch
from workbench.evaluation.evaluate import evaluate
from workbench.nn.architectures import build_model
from workbench.zoo.training import TrainConfig, init_members, mlp_train_flops, train_loop, train_vectorized

__all__ = ["matmul_peak_gflops"]



def matmul_peak_gflops(sizes: tuple[int, ...] = (512, 1024, 2048), seconds: float = 0.3) -> float:
    """Best fp32 square-matmul GFLOP/s of this machine over ``sizes`` (torch, current thread count)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        reps, watch = 0, Stopwatch()
        while True:
            a @ b
            reps += 1
            dt = watch.total
            if dt > seconds and reps >= 3:
                break
        best = max(best, 2 * n ** 3 * reps / dt / 1e9)
    return best



def bench_zoo(preset: str) -> dict[str, Any]:
    """Protocol 3 (independent seeds): vectorised trainer vs the one-at-a-time loop on the same members."""

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

    watch = Stopwatch()
    loop_states = []
    with watch("loop"):
        for s in seeds[:loop_members]:
            m = build_model(zcfg.arch, seed=s)
            train_loop(m, data.x_train, data.y_train, train)
            loop_states.append(m.state_dict())

    init = init_members(zcfg.arch, seeds)
    with watch("vectorized"):
        states, _ = train_vectorized(zcfg.arch, init, data.x_train, data.y_train, train)
    t_loop, t_vec = watch.seconds["loop"], watch.seconds["vectorized"]
    peak = max(peak_before, matmul_peak_gflops())

    flops_member = mlp_train_flops(zcfg.arch, train.epochs * len(data.y_train)) if zcfg.arch.name == "mlp3" else float("nan")

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
        "seconds": watch.rounded(total=False),
    }
