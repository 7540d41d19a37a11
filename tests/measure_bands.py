"""Measure the spread of the golden metrics over seeds (and thread counts) — the numbers the bands in the tests are
derived from. Run from the repository root:

    OMP_NUM_THREADS=2 .venv/bin/python tests/measure_bands.py --seeds 0 1 2 3 4 5 6 7 8 9 --out runs/bands-2t.jsonl
    OMP_NUM_THREADS=1 .venv/bin/python tests/measure_bands.py --seeds 0 1 2 3 4 --out runs/bands-1t.jsonl
    .venv/bin/python tests/measure_bands.py --summarise runs/bands-*.jsonl

Each line of the output is one (seed, threads) run of the three golden runs in ``tests/golden.py``; the summary
prints min / max / mean / std of every metric over all lines. ``tests/bands.md`` records the last measurement and
how each band follows from it."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden  # noqa: E402


def measure(seed: int) -> dict:
    """All golden metrics of one seed."""
    out: dict = {"seed": seed, "threads": torch.get_num_threads(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        *_, m = golden.pdiff_run(tmp / "pdiff", seed)
        out["pdiff"] = {k: v for k, v in m.items() if isinstance(v, float)}
        *_, m = golden.seeds_run(tmp / "seeds", seed)
        out["seeds"] = {k: v for k, v in m.items() if isinstance(v, float)}
        zoo = golden.lora_zoo(tmp / "lora", seed)
        _, m = golden.cond_run(zoo, tmp / "cache", seed)
        out["cond"] = {k: v for k, v in m.items() if isinstance(v, float)}
        out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def measure_system(system: str, seed: int) -> dict:
    """One system's figures of its notebook's ci run for one seed (``golden.<system>_run``: d2nwg, rpg)."""
    out: dict = {"seed": seed, "threads": torch.get_num_threads(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out[system] = getattr(golden, f"{system}_run")(Path(tmp), seed)
        out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def summarise(paths: list[str]) -> dict:
    """min / max / mean / std per metric over every recorded run."""
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    out: dict = {"runs": [(r["seed"], r["threads"]) for r in rows]}
    for section in [k for k, v in rows[0].items() if isinstance(v, dict)]:
        for k in rows[0][section]:
            v = torch.tensor([r[section][k] for r in rows], dtype=torch.float64)
            out[f"{section}.{k}"] = {"min": round(float(v.min()), 3), "max": round(float(v.max()), 3),
                                     "mean": round(float(v.mean()), 3), "std": round(float(v.std()), 3)}
    return out


def derive(stats: dict, floor: float) -> tuple[float, float]:
    """The band of one figure: [min − m, max + m] with m = max(2 × its std over the runs, ``floor``), rounded
    outward to the next multiple of ``floor`` / 2 — two standard deviations of seed-to-seed spread beyond anything
    measured, and never tighter than ``floor`` (1 point of accuracy, 0.1 for fractions)."""
    m = max(2 * stats["std"], floor)
    step = floor / 2
    lo = math.floor((stats["min"] - m) / step) * step
    hi = math.ceil((stats["max"] + m) / step) * step
    return round(lo, 3), round(hi, 3)


def main() -> None:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", default=None)
    ap.add_argument("--summarise", nargs="*", default=None)
    ap.add_argument("--system", choices=("golden", "d2nwg", "rpg"), default="golden",
                    help="golden: p-diff, seeds and Cond P-Diff (tests/golden.py); d2nwg / rpg: notebook 07's / "
                         "08's ci run")
    args = ap.parse_args()
    if args.summarise:
        stats = summarise(args.summarise)
        for k, v in stats.items():
            if k == "runs":
                print(f"runs (seed, threads): {v}")
                continue
            floor = 0.1 if k.endswith(("within_1pt", "fraction")) else 1.0
            print(f"{k:45s} min {v['min']:8.3f} max {v['max']:8.3f} std {v['std']:6.3f}  band {derive(v, floor)}")
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    for s in args.seeds:
        line = json.dumps(measure(s) if args.system == "golden" else measure_system(args.system, s))
        print(line, flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
