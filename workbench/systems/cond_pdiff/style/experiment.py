"""The style experiment (notebook 06 and ``bench style``)."""


from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.app.presets import load_preset
from workbench.systems.cond_pdiff.generator import CondPDiffConfig, fit_or_load_cond
from workbench.systems.cond_pdiff.style.evaluation import (
    continuous_generalisation,
    interpolation_frame,
    monotonic_fraction,
    style_evaluation,
)
from workbench.systems.cond_pdiff.style.zoo import collect_style_zoo


def style_experiment(preset: str, root, *, progress: bool = False) -> dict[str, Any]:
    """The whole style experiment of a preset (shared by ``bench style`` and notebook 06): collect (or resume) the
    style zoo under ``root``, fit or load the style-image-conditioned generator, evaluate, interpolate, run the
    style-continuous generalisation test. Returns every result and the seconds per stage."""



    p = load_preset(preset)
    st = p.generator_settings("style")
    root = Path(root)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    zoo = collect_style_zoo(p.style_zoo(st.get("zoo", "styles")), root / "zoo", progress=progress)
    seconds["zoo"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = fit_or_load_cond(zoo, p.style_config(), root / "generator", progress=progress)
    seconds["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = style_evaluation(zoo, gen, n_samples=int(st.get("n_samples", 8)), progress=progress)
    seconds["evaluate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # "all": every pair of styles — no choosing the pairs that interpolate well
    pairs = list(itertools.combinations(zoo.styles, 2)) if st["pairs"] == "all" else [tuple(x) for x in st["pairs"]]
    lambdas = [float(x) for x in np.linspace(0, 1, int(st.get("n_lambdas", 9)))]
    ends = {s: v[0] for s, v in res.generated.items()}
    interp, interp_images = interpolation_frame(zoo, gen, pairs, ends, lambdas)
    mono = {ref: monotonic_fraction(interp, reference=ref) for ref in ("styles", "ends")}
    seconds["interpolation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    c = st["continuous"]
    # its own generator config: per-task statistics do not exist for a held-out λ, and borrowing the nearest
    # training λ's would turn the test into a lookup, so the preset gives it one normalisation for all λs
    ccfg = CondPDiffConfig.from_dict(c["config"]) if "config" in c else p.style_config()
    cont, cont_gen = continuous_generalisation(zoo, ccfg, pair=tuple(c["pair"]),
                                               lambdas=[float(x) for x in np.linspace(0, 1, int(c["n_lambdas"]))],
                                               heldout=c["heldout"], per_lambda=int(c.get("per_lambda", 20)),
                                               n_samples=int(c.get("n_samples", 4)), progress=progress)
    seconds["continuous"] = time.perf_counter() - t0
    return {"zoo": zoo, "generator": gen, "result": res, "interpolation": interp, "interpolation_images": interp_images,
            "monotonic": mono, "continuous": cont, "continuous_generator": cont_gen, "lambdas": lambdas,
            "pairs": pairs, "seconds": seconds}
