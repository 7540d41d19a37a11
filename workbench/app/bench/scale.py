"""``bench scale``: the same work on more hardware — zoo collection on the local executor vs a local Ray, the
p-diff fit in one process vs two under ``accelerate launch``, and, where CUDA is present, every p-diff stage on the
GPU beside the CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from workbench.app.fit import generator_directory
from workbench.app.presets import load_preset
from workbench.core.device import resolve_device
from workbench.evaluation.evaluate import evaluate
from workbench.generator.latent_diffusion import PDiff
from workbench.zoo import collect
from workbench.zoo.collection import collect_all
from workbench.zoo.executors import RayExecutor, ray_available

__all__ = ["bench_scale"]


def _same_zoo(a, b) -> bool:
    cols = ["member_id", "seed", "step", "train_acc", "test_acc", "train_loss", "test_loss"]
    return bool(torch.equal(a.vectors(), b.vectors()) and a.manifest[cols].equals(b.manifest[cols]))


def _fit(preset: str, key: str, run: Path, *, processes: int, threads: int, shards: int) -> dict[str, Any]:
    """``python -m workbench fit`` in fresh processes (alone, or ``processes`` under accelerate); wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WORKBENCH_GRAD_SHARDS": str(shards)}
    if not torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = ""
    fit = ["workbench", "fit", "--preset", preset, "--zoo", key, "--run-dir", str(run), "--quiet"]
    if processes == 1:
        cmd = [sys.executable, "-m", *fit]
    else:
        # --multi_gpu selects accelerate's torchrun launcher, which also runs CPU processes (gloo)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", *fit]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed ({done.returncode}): {done.stderr[-1500:]}")
    result = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
    return {**result, "wall_seconds": wall}


def _weights(run: Path, key: str) -> dict[str, torch.Tensor]:
    d = generator_directory(run, key)
    return {f"{f}.{k}": v for f in ("autoencoder_weights", "denoiser_weights")
            for k, v in load_file(d / f"{f}.safetensors").items()}


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _pipeline_seconds(preset: str, key: str, root: Path, device: torch.device, n: int, steps: int
                      ) -> dict[str, float]:
    """Seconds of each p-diff stage of zoo ``key`` on ``device``: collection, both fits, sampling, evaluation."""
    p = load_preset(preset)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    zoo = collect(p.zoo(key), root / "zoo", progress=False, base_cache=root / "bases", device=device)
    out["zoo"] = time.perf_counter() - t0
    gen = PDiff(p.pdiff_config(), device=device).fit(zoo, progress=False)
    out.update({k: v for k, v in gen.seconds.items() if k in ("autoencoder", "diffusion")})
    t0 = time.perf_counter()
    samples = gen.sample(n, sampler="ddim", steps=steps, seed=0)
    out["sample"] = time.perf_counter() - t0
    data = zoo.data().to(device)
    t0 = time.perf_counter()
    evaluate(samples, (data.x_test, data.y_test), model=zoo.model(), spec=zoo.spec, device=device)
    out["evaluate"] = time.perf_counter() - t0
    out["total"] = sum(out.values())
    return {k: round(v, 2) for k, v in out.items()}


def bench_scale(preset: str) -> dict[str, Any]:
    """Ray vs the local executor on the preset's seeds zoo; one process vs two (accelerate, gloo) on its p-diff
    fit; CPU vs CUDA per p-diff stage when CUDA is present."""
    p = load_preset(preset)
    settings = p.bench.get("scale", {})
    seeds_key = settings.get("seeds_zoo", "mlp_seeds")
    fit_key = settings.get("fit_zoo", p.bench.get("pdiff", {}).get("zoo", "mlp_dense"))
    n = int(settings.get("n_samples", 100))
    steps = int(settings.get("steps", p.bench.get("pdiff", {}).get("steps", 50)))
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    out: dict[str, Any] = {"preset": preset, "seeds_zoo": seeds_key, "fit_zoo": fit_key, "cpu_cores": cores}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = p.zoo(seeds_key)
        t0 = time.perf_counter()
        local = collect(cfg, tmp / "local", progress=False, executor="local")
        out["zoo_local_seconds"] = round(time.perf_counter() - t0, 2)
        out["zoo_members"] = len(local)
        if ray_available():
            t0 = time.perf_counter()
            with RayExecutor(num_cpus=cores) as ex:
                # a cold Ray (started here, workers importing torch) as a newcomer meets it, then the same
                # collection again on the warm cluster: what each further zoo costs
                ray_zoo = collect(cfg, tmp / "ray", progress=False, executor=ex)
                out["zoo_ray_seconds"] = round(time.perf_counter() - t0, 2)
                t1 = time.perf_counter()
                warm = collect(cfg, tmp / "ray_warm", progress=False, executor=ex)
                out["zoo_ray_warm_seconds"] = round(time.perf_counter() - t1, 2)
            out["zoo_identical"] = _same_zoo(local, ray_zoo) and _same_zoo(local, warm)
            out["ray_overhead"] = round(out["zoo_ray_seconds"] / out["zoo_local_seconds"] - 1, 3)
            out["ray_overhead_warm"] = round(out["zoo_ray_warm_seconds"] / out["zoo_local_seconds"] - 1, 3)
        else:
            out["zoo_ray_seconds"], out["zoo_identical"] = None, None
            out["ray_missing"] = "pip install 'workbench[distributed]' (ray) to measure the Ray executor"

        # one zoo for every fit: only the generator training is compared
        base = tmp / "fit_base"
        collect_all({fit_key: p.zoo(fit_key)}, base, progress=False)
        runs = {}
        for name in ("one", "one_sharded", "two"):
            runs[name] = tmp / name
            runs[name].mkdir()
            for part in ("zoos", "bases"):
                shutil.copytree(base / part, runs[name] / part)
        one = _fit(preset, fit_key, runs["one"], processes=1, threads=cores, shards=1)
        one_sharded = _fit(preset, fit_key, runs["one_sharded"], processes=1, threads=half, shards=2)
        two = _fit(preset, fit_key, runs["two"], processes=2, threads=half, shards=2)
        w_one, w_sharded, w_two = (_weights(runs[k], fit_key) for k in ("one", "one_sharded", "two"))
        out.update({
            "fit_1proc_seconds": round(one["seconds"], 2),
            "fit_1proc_wall_seconds": round(one["wall_seconds"], 2),
            "fit_1proc_threads": cores,
            "fit_accelerate_2proc_seconds": round(two["seconds"], 2),
            "fit_accelerate_2proc_wall_seconds": round(two["wall_seconds"], 2),
            "fit_accelerate_threads_per_process": half,
            "fit_1proc_2shards_seconds": round(one_sharded["seconds"], 2),
            # the same two gradient slices summed by one process or by an all-reduce over two
            "fit_max_abs_diff": _max_abs_diff(w_sharded, w_two),
            # one process's plain full-batch gradient: equal up to rounding, which Adam's normalised steps amplify
            "fit_max_abs_diff_plain": _max_abs_diff(w_one, w_two),
            "fit_final_loss": {"1proc": one["final_loss"], "2proc": two["final_loss"]},
        })

        out["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        cpu = resolve_device("cpu")
        out["cpu_seconds"] = _pipeline_seconds(preset, fit_key, tmp / "cpu", cpu, n, steps)
        if torch.cuda.is_available():
            out["gpu_name"] = torch.cuda.get_device_name(0)
            out["cuda_seconds"] = _pipeline_seconds(preset, fit_key, tmp / "cuda", resolve_device("cuda"), n, steps)
            out["cuda_speedup_total"] = round(out["cpu_seconds"]["total"] / out["cuda_seconds"]["total"], 2)
    return out
