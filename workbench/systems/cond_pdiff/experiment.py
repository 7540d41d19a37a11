"""The Cond P-Diff experiment (notebook 05 and ``bench cond``): one function, so their figures are equal by
construction.

Configs come in as arguments (the notebook and the benchmark read them from a preset: a system never imports the
app layer). ``seed`` reaches every random stream: it is added to the zoo's fine-tuning seed (the data split,
``data_seed``, stays), to the generator's training seeds (autoencoder and diffusion: minibatches, noise, the
denoiser's initialisation) and to the sampling seeds of every evaluation. Seed 0 leaves the configs as they are, so
its figures are the preset's own; other seeds write their zoo and generator beside seed 0's (``<dir>_seed<k>``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, TypeVar

import pandas as pd

from workbench.core.config import offset_seed
from workbench.core.device import DeviceLike
from workbench.core.paths import seeded_path
from workbench.core.result_cache import cached_json, data_fingerprint
from workbench.core.timing import Stopwatch
from workbench.generator.latent_diffusion import seeded_pdiff_config
from workbench.systems.cond_pdiff.evaluation import (
    cached_cond_evaluation,
    cond_ablation,
    cond_evaluation,
    summary,
)
from workbench.systems.cond_pdiff.generator import CondPDiffConfig, fit_or_load_cond
from workbench.zoo.lora.tasks import LoRAZooConfig, collect_lora_zoo
from workbench.zoo.lora.text import TextLoRAZooConfig, collect_text_lora_zoo
from workbench.zoo.protocol import ParameterZoo

__all__ = ["cond_experiment", "collect_task_zoo", "seeded_config",
           "NORMALISATION_VARIANTS", "CONDITION_VARIANTS", "GUIDANCE_SCALES"]

#: The ablations of Cond P-Diff's Table 4 (fields of CondPDiffConfig; p-diff fields under "pdiff").
NORMALISATION_VARIANTS: dict[str, dict] = {"task": {}, "position (batch-norm-like)": {"pdiff": {"normaliser": "position"}},
                                           "none": {"pdiff": {"normaliser": "none"}}}
CONDITION_VARIANTS: dict[str, dict] = {"one-hot": {"condition": "one_hot"}, "learnable": {"condition": "learnable"},
                                       "description": {"condition": "description"},
                                       "description + 2 examples": {"condition": "description+examples"}}
#: Classifier-free guidance scales compared (1: plain conditional sampling).
GUIDANCE_SCALES = (1.0, 2.0, 4.0)

Z = TypeVar("Z")


def seeded_config(config: CondPDiffConfig, seed: int) -> CondPDiffConfig:
    """``config`` with ``seed`` added to its autoencoder and diffusion training seeds (seed 0: unchanged)."""
    return replace(config, pdiff=seeded_pdiff_config(config.pdiff, seed)) if seed else config


def collect_task_zoo(zoo_config: LoRAZooConfig | TextLoRAZooConfig, root: str | Path, *, progress: bool = False,
                     device: DeviceLike = None) -> ParameterZoo:
    """Collect (or resume) the LoRA zoo of a task zoo config: over images, or over text for a text config."""
    if isinstance(zoo_config, TextLoRAZooConfig):
        return collect_text_lora_zoo(zoo_config, root, progress=progress, device=device)
    return collect_lora_zoo(zoo_config, root, progress=progress, device=device)


def cond_experiment(zoo_config: LoRAZooConfig | TextLoRAZooConfig, config: CondPDiffConfig, zoo_dir: str | Path,
                    generator_dir: str | Path, *, n_samples: int = 20, seed: int = 0,
                    ablation: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None,
                    progress: bool = False, device: DeviceLike = None) -> dict[str, Any]:
    """The whole Cond P-Diff experiment: collect (or resume) the LoRA zoo in ``zoo_dir``, fit (or load) the
    conditional generator in ``generator_dir``, evaluate ``n_samples`` models per task (seen and unseen), and —
    with ``ablation`` settings (``n_samples``, ``steps``, ``checkpoints``: the preset's) — compare guidance scales
    and refit the ablations (normalisation, condition, checkpoints per task). ``device``: where the zoo's
    fine-tuning and the generator run (default the CPU; the evaluation runs on the CPU).

    Returns ``zoo``, ``generator``, ``result`` (:class:`CondResult`), ``summary``, ``guidance`` and ``ablations``
    (tables; None/empty without ``ablation``), the seeded configs, and ``seconds`` per stage."""
    watch = Stopwatch()
    zoo_config, config = offset_seed(zoo_config, seed), seeded_config(config, seed)
    with watch("zoo"):
        zoo = collect_task_zoo(zoo_config, seeded_path(zoo_dir, seed), progress=progress, device=device)
    with watch("fit"):
        gen = fit_or_load_cond(zoo, config, seeded_path(generator_dir, seed), cache_dir=cache_dir, progress=progress,
                               device=device)
    with watch("evaluate"):  # loaded from the generator's folder when nothing changed
        res = cached_cond_evaluation(seeded_path(generator_dir, seed) / "evaluation", zoo, gen, n_samples=n_samples,
                                     seed=seed)
    guidance, ablations = None, {}
    if ablation is not None:
        ab_n = int(ablation["n_samples"])
        gen_dir = seeded_path(generator_dir, seed)
        with watch("guidance"):  # computed once per run directory, zoo and generator; loaded on later runs
            by_scale = cached_json(gen_dir / "guidance.json", {
                "config": config.to_dict(), "n_samples": ab_n, "seed": seed, "scales": list(GUIDANCE_SCALES),
                "zoo": data_fingerprint(zoo.vectors())}, lambda: {
                    str(s): summary(cond_evaluation(zoo, gen, n_samples=ab_n, seed=seed, guidance_scale=s))
                    for s in GUIDANCE_SCALES})
            guidance = pd.DataFrame({float(s): v for s, v in by_scale.items()}).T.rename_axis("guidance scale")
        kw = {"n_samples": ab_n, "seed": seed, "steps": int(ablation["steps"]), "cache_dir": cache_dir,
              "directory": gen_dir / "ablations"}
        variants = {"normalisation": NORMALISATION_VARIANTS, "condition": CONDITION_VARIANTS,
                    "checkpoints": {f"last {k} checkpoints": {"checkpoints": int(k)} for k in ablation["checkpoints"]}}
        with watch("ablation"):
            ablations = {name: cond_ablation(zoo, config, v, **kw) for name, v in variants.items()}
    return {"zoo": zoo, "generator": gen, "result": res, "summary": summary(res), "guidance": guidance,
            "ablations": ablations, "zoo_config": zoo_config, "config": config, "seconds": {**watch.seconds, "total": watch.total}}
