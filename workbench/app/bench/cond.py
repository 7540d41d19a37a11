"""``bench cond``: Cond P-Diff from scratch."""


from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from workbench.app.presets import load_preset, preset_folder
from workbench.app.report import REPO
from workbench.core.io import atomic_write_csv
from workbench.core.timing import Stopwatch
from workbench.systems.cond_pdiff.experiment import cond_experiment


def bench_cond(preset: str, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Cond P-Diff from scratch: LoRA zoo (features + per-task fine-tuning), conditional generator, evaluation —
    notebook 05's experiment without its ablations (they refit the generator once per row)."""
    p = load_preset(preset)
    inputs = p.cond_inputs(p.bench.get("cond", {}))
    inputs["ablation"] = None
    watch = Stopwatch()
    with tempfile.TemporaryDirectory() as tmp:
        ex = cond_experiment(**inputs, zoo_dir=Path(tmp) / "zoo", generator_dir=Path(tmp) / "generator", seed=seed,
                             cache_dir=REPO / "runs" / "cache", device=device)
        res = ex["result"]
        out_dir = REPO / "runs" / preset_folder(preset) / "bench_cond"
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(out_dir / "per_task_seen.csv", res.seen, index=True)
        atomic_write_csv(out_dir / "per_task_unseen.csv", res.unseen, index=True)
        lora_params = ex["zoo"].spec.numel
    seconds = {k: v for k, v in ex["seconds"].items() if k != "total"} | {"total": watch.total}
    r = lambda v: round(float(v), 3)  # noqa: E731
    out = {"preset": preset, **{k: (int(v) if k.startswith("n_") else r(v)) for k, v in ex["summary"].items()},
           "lora_params": lora_params, "n_samples_per_task": inputs["n_samples"], "per_task_tables": str(out_dir),
           "seconds": {k: round(v, 2) for k, v in seconds.items()}, "seconds_total": round(seconds["total"], 2)}
    json.dumps(out)
    return out
