"""``bench cond``: Cond P-Diff from scratch."""


from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from workbench.app.presets import load_preset, preset_folder
from workbench.app.report import REPO
from workbench.core.io import atomic_write_csv
from workbench.systems.cond_pdiff.evaluation import cond_evaluation, summary
from workbench.systems.cond_pdiff.generator import CondPDiff
from workbench.zoo.lora.tasks import collect_lora_zoo
from workbench.zoo.lora.text import collect_text_lora_zoo


def bench_cond(preset: str) -> dict[str, Any]:
    """Cond P-Diff from scratch: LoRA zoo (features + per-task fine-tuning), conditional generator, evaluation."""



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
