"""The style experiment (notebook 06 and ``bench style``): one function, so their figures are equal by construction.

Configs and settings come in as arguments (the notebook and the benchmark read them from a preset). ``seed`` reaches
every random stream as in :mod:`workbench.systems.cond_pdiff.experiment`: the style zoo's seed (content patches, LoRA
initialisation and minibatches), both generators' training seeds, and the sampling seeds of the evaluation and of
the style-continuous test; seed 0 leaves the configs as they are.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from workbench.core.config import offset_seed
from workbench.core.device import DeviceLike
from workbench.core.paths import seeded_path
from workbench.core.timing import Stopwatch
from workbench.systems.cond_pdiff.experiment import seeded_config
from workbench.systems.cond_pdiff.generator import CondPDiffConfig, fit_or_load_cond
from workbench.systems.cond_pdiff.style.evaluation import (
    continuous_generalisation,
    interpolation_frame,
    monotonic_fraction,
    style_evaluation,
)
from workbench.systems.cond_pdiff.style.zoo import StyleZooConfig, collect_style_zoo

__all__ = ["style_experiment"]


def style_experiment(zoo_config: StyleZooConfig, config: CondPDiffConfig, settings: Mapping[str, Any],
                     root: str | Path, *, seed: int = 0, progress: bool = False,
                     device: DeviceLike = "cpu") -> dict[str, Any]:
    """The whole style experiment: collect (or resume) the style zoo under ``root``, fit or load the
    style-image-conditioned generator, evaluate, interpolate, run the style-continuous generalisation test.

    ``settings``: the preset's style generator settings — ``n_samples``, ``pairs`` (a list, or "all"),
    ``n_lambdas`` and ``continuous`` (``pair``, ``n_lambdas``, ``heldout``, ``per_lambda``, ``n_samples`` and its
    own generator ``config``). Returns every result and the seconds per stage."""
    st = settings
    root = Path(root)
    watch = Stopwatch()
    zoo_config, config = offset_seed(zoo_config, seed), seeded_config(config, seed)
    with watch("zoo"):
        zoo = collect_style_zoo(zoo_config, seeded_path(root / "zoo", seed), progress=progress, device=device)
    with watch("fit"):
        gen = fit_or_load_cond(zoo, config, seeded_path(root / "generator", seed), progress=progress, device=device)
    with watch("evaluate"):
        res = style_evaluation(zoo, gen, n_samples=int(st.get("n_samples", 8)), seed=seed, progress=progress)
    with watch("interpolation"):
        # "all": every pair of styles — no choosing the pairs that interpolate well
        pairs = list(itertools.combinations(zoo.styles, 2)) if st["pairs"] == "all" else \
            [tuple(x) for x in st["pairs"]]
        lambdas = [float(x) for x in np.linspace(0, 1, int(st.get("n_lambdas", 9)))]
        ends = {s: v[0] for s, v in res.generated.items()}
        interp, interp_images = interpolation_frame(zoo, gen, pairs, ends, lambdas)
        mono = {ref: monotonic_fraction(interp, reference=ref) for ref in ("styles", "ends")}
    with watch("continuous"):
        c = st["continuous"]
        # its own generator config: per-task statistics do not exist for a held-out λ, and borrowing the nearest
        # training λ's would turn the test into a lookup, so the preset gives it one normalisation for all λs
        ccfg = seeded_config(CondPDiffConfig.from_dict(c["config"]), seed) if "config" in c else config
        cont, cont_gen = continuous_generalisation(zoo, ccfg, pair=tuple(c["pair"]),
                                                   lambdas=[float(x) for x in np.linspace(0, 1, int(c["n_lambdas"]))],
                                                   heldout=c["heldout"], per_lambda=int(c.get("per_lambda", 20)),
                                                   n_samples=int(c.get("n_samples", 4)), seed=seed, progress=progress)
    return {"zoo": zoo, "generator": gen, "result": res, "interpolation": interp, "interpolation_images": interp_images,
            "monotonic": mono, "continuous": cont, "continuous_generator": cont_gen, "lambdas": lambdas,
            "pairs": pairs, "zoo_config": zoo_config, "config": config,
            "seconds": {**watch.seconds, "total": watch.total}}
