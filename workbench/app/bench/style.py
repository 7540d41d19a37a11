"""``bench style``: style-conditioned LoRA generation and interpolation."""


from __future__ import annotations

import json
import tempfile
from typing import Any

from workbench.app.presets import load_preset, preset_folder
from workbench.app.report import REPO
from workbench.core.io import atomic_write_csv
from workbench.core.timing import Stopwatch
from workbench.systems.cond_pdiff.style.evaluation import summary
from workbench.systems.cond_pdiff.style.experiment import style_experiment


def bench_style(preset: str, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Style-conditioned LoRA generation from scratch: style zoo, generator, metrics vs baselines, interpolation,
    style-continuous generalisation (notebook 06's experiment)."""
    watch = Stopwatch()
    with tempfile.TemporaryDirectory() as tmp:
        ex = style_experiment(**load_preset(preset).style_inputs(), root=tmp, seed=seed, device=device)
        out_dir = REPO / "runs" / preset_folder(preset) / "bench_style"
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(out_dir / "per_style.csv", ex["result"].table)
        atomic_write_csv(out_dir / "interpolation.csv", ex["interpolation"])
        atomic_write_csv(out_dir / "continuous.csv", ex["continuous"], index=True)
        zoo = ex["zoo"]
        n_styles, lora_params = len(zoo.styles), zoo.spec.numel
    seconds = {k: v for k, v in ex["seconds"].items() if k != "total"} | {"total": watch.total}
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
