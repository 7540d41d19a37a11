"""Benchmarks: each prints one JSON object as the last stdout line (``python -m workbench bench <name>``).

Speed and quality targets live here, never in timed tests. Each benchmark runs its system's experiment (the same
function its notebook calls) and reports figures and wall seconds per stage."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from workbench.app.bench.analysis import bench_analysis
from workbench.app.bench.cond import bench_cond
from workbench.app.bench.d2nwg import bench_d2nwg
from workbench.app.bench.pdiff import bench_pdiff
from workbench.app.bench.report import bench_report
from workbench.app.bench.robustness import bench_robustness
from workbench.app.bench.rpg import bench_rpg
from workbench.app.bench.scale import bench_scale
from workbench.app.bench.seeds import bench_seeds
from workbench.app.bench.style import bench_style
from workbench.app.bench.zoo import bench_zoo, matmul_peak_gflops
from workbench.app.presets import load_preset
from workbench.core.device import resolve_device

__all__ = ["BENCHMARKS", "run_benchmark", "matmul_peak_gflops"]

BENCHMARKS: dict[str, Callable[[str], dict[str, Any]]] = {
    "zoo": bench_zoo, "pdiff": bench_pdiff, "analysis": bench_analysis, "seeds": bench_seeds, "cond": bench_cond,
    "style": bench_style, "robustness": bench_robustness, "d2nwg": bench_d2nwg, "rpg": bench_rpg,
    "scale": bench_scale, "report": bench_report,
}


def takes_device(name: str) -> bool:
    """Whether benchmark ``name`` runs its stages on a chosen device (the others measure the CPU)."""
    return "device" in inspect.signature(BENCHMARKS[name]).parameters


def run_benchmark(name: str, preset: str, device: str = "cpu") -> dict[str, Any]:
    """Run one benchmark by name on ``device``; the name, the preset and the device are checked before any work
    starts (a ValueError listing the valid benchmarks, or naming what is wrong)."""
    if not isinstance(name, str) or name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {sorted(BENCHMARKS)} "
                         "(python -m workbench bench <name> --preset <preset>)")
    load_preset(preset)  # an unknown or malformed preset fails here, not minutes into the benchmark
    dev = resolve_device(device, name="--device")
    if takes_device(name):
        return BENCHMARKS[name](preset, device=str(dev))
    if dev.type != "cpu":
        raise ValueError(f"bench {name} measures the CPU only; --device applies to "
                         f"{sorted(n for n in BENCHMARKS if takes_device(n))} (bench scale puts CPU and CUDA side "
                         "by side)")
    return BENCHMARKS[name](preset)
