"""``bench rpg``: tokenised recurrent parameter generation — entire models from seeds, unseen task codes, and the
memory / time curve as the generated model grows, and a real ≥ 1M-parameter model generated whole (notebook 08's
experiment)."""

from __future__ import annotations

import json
import tempfile
from typing import Any

from workbench.app.presets import load_preset, preset_folder
from workbench.app.report import REPO
from workbench.core.io import atomic_write_csv
from workbench.core.timing import Stopwatch
from workbench.systems.rpg.experiment import rpg_experiment


def bench_rpg(preset: str, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """The whole RPG study from scratch in a temporary run directory; its tables are written under
    ``runs/<preset>/bench_rpg``."""
    watch = Stopwatch()
    p = load_preset(preset)
    parts = p.rpg_parts()
    with tempfile.TemporaryDirectory() as tmp:
        res = rpg_experiment(**p.rpg_inputs(), run_dir=tmp, seed=seed, parts=parts, progress=False,
                             device=device)
    out_dir = REPO / "runs" / preset_folder(preset) / "bench_rpg"
    out_dir.mkdir(parents=True, exist_ok=True)
    if res.seeds is not None:
        atomic_write_csv(out_dir / "seeds.csv", res.seeds.result.table, index=True)
        atomic_write_csv(out_dir / "seeds_novelty.csv", res.seeds.result.novelty, index=True)
        atomic_write_csv(out_dir / "seeds_aligned_novelty.csv", res.seeds.aligned_novelty, index=True)
    if res.tasks is not None:
        atomic_write_csv(out_dir / "task_codes.csv", res.tasks.table, index=True)
    if res.largest is not None:
        atomic_write_csv(out_dir / "largest.csv", res.largest.table, index=True)
    if res.scale is not None:
        atomic_write_csv(out_dir / "scale.csv", res.scale)
    if res.ablations is not None:
        atomic_write_csv(out_dir / "ablations.csv", res.ablations, index=True)
    if res.capacity is not None:
        atomic_write_csv(out_dir / "capacity.csv", res.capacity, index=True)
    out = {"preset": preset, "parts": list(parts), **res.summary, "tables": str(out_dir),
           "seconds": {k: round(v, 2) for k, v in res.seconds.items() if k != "total"},
           "seconds_total": round(watch.total, 2)}
    json.dumps(out)
    return out
