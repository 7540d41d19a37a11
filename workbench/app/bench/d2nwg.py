"""``bench d2nwg``: dataset-conditioned head generation on held-out datasets vs every baseline (notebook 07's
experiment)."""

from __future__ import annotations

import json
import tempfile
from typing import Any

from workbench.app.presets import load_preset, preset_folder
from workbench.app.report import REPO
from workbench.core.io import atomic_write_csv
from workbench.core.timing import Stopwatch
from workbench.systems.d2nwg.experiment import d2nwg_experiment


def bench_d2nwg(preset: str, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """The whole D2NWG study from scratch (dataset zoo, generator, evaluation, fine-tuning, ablations); the
    per-dataset tables are written under ``runs/<preset>/bench_d2nwg``."""
    watch = Stopwatch()
    with tempfile.TemporaryDirectory() as tmp:
        res = d2nwg_experiment(**load_preset(preset).d2nwg_inputs(), run_dir=tmp, seed=seed, progress=False,
                               device=device)
    out_dir = REPO / "runs" / preset_folder(preset) / "bench_d2nwg"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in (("unseen", res.unseen), ("seen", res.seen), ("shots", res.shots),
                        ("ablations", res.ablations)):
        atomic_write_csv(out_dir / f"{name}.csv", table, index=True)
    atomic_write_csv(out_dir / "finetune_curves.csv", res.curves)
    seconds = {**{k: round(v, 2) for k, v in res.seconds.items() if k != "total"},
               **{f"fit_{k}": round(v, 2) for k, v in res.generator.seconds.items() if k != "total"}}
    out = {"preset": preset, **res.summary,
           "shots_ablation": {int(k): {c: round(float(v), 3) for c, v in row.items()}
                              for k, row in res.shots.iterrows()},
           "ablations": {k: {c: round(float(v), 3) for c, v in row.items()} for k, row in res.ablations.iterrows()},
           "tables": str(out_dir), "seconds": seconds, "seconds_total": round(watch.total, 2)}
    json.dumps(out)
    return out
