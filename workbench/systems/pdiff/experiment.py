"""The p-diff experiments, one function per setting, shared by the notebooks and the benchmarks so that a notebook
and its benchmark compute the same figures by construction:

- :func:`pdiff_experiment` — dense-checkpoint zoos: notebooks 02 and 03 (first part), ``bench pdiff``;
- :func:`seeds_experiment` — entire models from independent seeds: notebook 03 (second part), ``bench seeds``;
- :func:`memorisation_experiment` — is the generator memorising: notebook 04, ``bench analysis``.

Each takes configs and settings as arguments (a system never reads a preset: the caller loads it) and works under a
``root`` directory, resuming whatever is already there::

    root/zoos/<key>                      the zoo (collected or resumed)
    root/bases/                          trained base models shared between dense zoos
    root/generators/pdiff/<key>/         the p-diff generator of that zoo (+ evaluation.csv / .json)
    root/generators/seeds/<variant>/     the seeds generators, "aligned" and "unaligned" (+ ../evaluation.csv)

``seed`` moves every random stream at once (:func:`seeded_zoo_config`, :func:`seeded_pdiff_config`): the zoo
collection, both generator training streams, sampling and the baselines. Seed 0 is the configs' own seeds, exactly
what the benchmarks always ran; any other seed gets its own folders (``<name>_seed<k>``), so runs never mix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from workbench.core.device import DeviceLike
from workbench.core.io import atomic_write_csv, atomic_write_json
from workbench.core.paths import seeded_name
from workbench.core.result_cache import data_fingerprint
from workbench.core.timing import Stopwatch
from workbench.evaluation.evaluate import EvalResult, MemberEvaluator
from workbench.evaluation.memorisation import MemorisationResult, memorisation_analysis
from workbench.evaluation.result_store import StoredResults, load_results, save_results
from workbench.evaluation.tables import evaluation_table
from workbench.generator.latent_diffusion import PDiff, PDiffConfig, fit_or_load, seeded_pdiff_config
from workbench.systems.pdiff.seeds import SeedsResult, seeds_evaluation
from workbench.zoo import Zoo, ZooConfig
from workbench.zoo.collection import collect_all, seeded_zoo_config

__all__ = ["PDiffRun", "SeedsRun", "MemorisationRun", "pdiff_experiment", "seeds_experiment",
           "memorisation_experiment", "seeded_zoo_config", "seeded_pdiff_config", "seeded_name", "collect_zoo",
           "sampler_arguments"]

def collect_zoo(key: str, config: ZooConfig, root: str | Path, *, seed: int = 0, progress: bool = False,
                device: DeviceLike = "cpu") -> Zoo:
    """Collect (or resume) the zoo ``config``, moved by ``seed``, into ``root/zoos/<key>`` (training on
    ``device``)."""
    return collect_all({key: config}, root, seed=seed, progress=progress, device=device)[key]


def sampler_arguments(name: str) -> dict[str, Any]:
    """``PDiff.sample`` arguments of a sampler name: ``"ddpm"`` (all T steps), ``"ddim"`` or ``"ddim-<steps>"``."""
    kind, _, steps = name.partition("-")
    if kind == "ddpm" and not steps:
        return {"sampler": "ddpm"}
    if kind == "ddim" and (not steps or steps.isdigit()):
        return {"sampler": "ddim", "steps": int(steps) if steps else None}
    raise ValueError(f"unknown sampler {name!r}: use 'ddpm', 'ddim' or 'ddim-<steps>' (e.g. 'ddim-50')")


def _zoo_and_generator(key: str, zoo_config: ZooConfig, config: PDiffConfig, root: Path, seed: int, progress: bool,
                       watch: Stopwatch, device: DeviceLike = "cpu") -> tuple[Zoo, PDiff, Path]:
    """The dense zoo and its p-diff generator (collected or resumed, fitted or loaded) and the generator's folder."""
    with watch("zoo"):
        zoo = collect_zoo(key, zoo_config, root, seed=seed, progress=progress, device=device)
    directory = root / "generators" / "pdiff" / seeded_name(key, seed)
    with watch("fit"):
        gen = fit_or_load(zoo, seeded_pdiff_config(config, seed), directory, progress=progress, device=device)
    return zoo, gen, directory


@dataclass
class PDiffRun:
    """What :func:`pdiff_experiment` computes for one dense zoo (accuracies in percent)."""

    key: str
    zoo: Zoo
    generator: PDiff
    directory: Path                      # the generator's folder; the evaluation table is written there
    evaluator: MemberEvaluator
    reconstruction: EvalResult           # test evaluation of every member, encoded and decoded (no noise)
    samples: dict[str, torch.Tensor]     # per sampler name ("ddpm", "ddim-50"): the generated vectors
    table: pd.DataFrame | None           # evaluation table with baselines (None when not evaluated)
    results: dict[str, tuple[EvalResult, EvalResult]]  # per table row: (train, test) evaluations
    seconds: dict[str, float]            # per stage: zoo, fit, reconstruct, sample (<name>), evaluate, total


def pdiff_experiment(key: str, zoo_config: ZooConfig, config: PDiffConfig, root: str | Path, *,
                     n_samples: int = 100, samplers: Sequence[str] = ("ddpm", "ddim-50"), draw: int = 0,
                     evaluate: bool = True, seed: int = 0, progress: bool = False,
                     device: DeviceLike = "cpu") -> PDiffRun:
    """p-diff on one dense zoo: collect or resume the zoo under ``root``, fit or load the generator, measure the
    reconstruction, sample ``n_samples`` models with each sampler and evaluate them beside the originals and the
    baselines (written to ``evaluation.csv`` / ``.json`` in the generator's folder).

    ``draw``: sample ``max(n_samples, draw)`` models in one batch and keep the first ``n_samples`` (the benchmark
    times a batch of 100 whatever ``n_samples`` is). ``samplers=()`` and ``evaluate=False`` stop after the
    reconstruction (notebook 02). ``device``: where every stage runs (``"auto"``: CUDA when present)."""
    root, watch = Path(root), Stopwatch()
    zoo, gen, directory = _zoo_and_generator(key, zoo_config, config, root, seed, progress, watch, device)
    data = zoo.data().to(gen.device)  # moved once for the reconstruction and every evaluation below
    ev = MemberEvaluator(zoo.model(), zoo.spec, probe=data.x_test, device=gen.device)
    cache = directory / "experiment"
    weights = [t for m in (gen.ae, gen.denoiser) for t in m.state_dict().values()]
    key_of_run = {"zoo": data_fingerprint(zoo.vectors()), "generator": data_fingerprint(*weights),
                  "n_samples": n_samples, "samplers": list(samplers), "draw": draw, "evaluate": evaluate, "seed": seed}
    saved = load_results(cache, key_of_run)
    if saved is not None:  # nothing changed since the run that computed it: loaded (a report's second run)
        return PDiffRun(key, zoo, gen, directory, ev, saved.single["reconstruction"], saved.tensors,
                        saved.frames["table"], dict(saved.results),
                        {**watch.seconds, **saved.extra["seconds"], "total": watch.total})
    with watch("reconstruct"):
        reconstruction = ev(gen.reconstruct(zoo.vectors()), data.x_test, data.y_test)
    samples: dict[str, torch.Tensor] = {}
    if samplers:
        gen.sample(4, sampler="ddim", steps=10, seed=seed)  # warm-up (thread pools, allocator): not timed
    for name in samplers:
        with watch(f"sample ({name})"):
            vectors = gen.sample(max(n_samples, draw), seed=seed, **sampler_arguments(name))
        samples[name] = vectors[:n_samples]
    table, results = None, {}
    if evaluate:
        with watch("evaluate"):
            table, results = evaluation_table(zoo, samples, evaluator=ev, seed=seed)
        atomic_write_csv(directory / "evaluation.csv", table, index=True)
        atomic_write_json(directory / "evaluation.json", table.reset_index().to_dict("records"))
    save_results(cache, key_of_run, StoredResults(
        frames={"table": table}, tensors=samples, results=results, single={"reconstruction": reconstruction},
        extra={"seconds": {k: v for k, v in watch.seconds.items() if k not in ("zoo", "generator")}}))
    return PDiffRun(key, zoo, gen, directory, ev, reconstruction, samples, table, results,
                    {**watch.seconds, "total": watch.total})


@dataclass
class SeedsRun:
    """What :func:`seeds_experiment` computes for one independent-seeds zoo."""

    key: str
    zoo: Zoo
    generators: dict[str, PDiff]         # "aligned" (the config as given) and "unaligned" (align="none")
    samples: dict[str, torch.Tensor]     # per generator: the generated vectors
    result: SeedsResult                  # tables: evaluation, novelty, interpolation barriers and curves
    seconds: dict[str, float]            # per stage: zoo, fit_<g>, sample_<g>, evaluate, total


def seeds_experiment(key: str, zoo_config: ZooConfig, config: PDiffConfig, root: str | Path, *, n_samples: int = 100,
                     sampler: str = "ddpm", steps: int = 50, seed: int = 0, progress: bool = False,
                     device: DeviceLike = "cpu") -> SeedsRun:
    """Entire models from independent seeds: collect or resume the zoo, fit or load the generator with its alignment
    (``config``) and without (``align="none"``: the permutation collapse), sample ``n_samples`` models from each and
    evaluate them against the before/after-alignment baselines (:func:`~workbench.systems.pdiff.seeds.
    seeds_evaluation`; the table is written to ``root/generators/seeds/evaluation.csv``).

    ``steps`` is DDIM's only: DDPM always runs all T steps."""
    root, watch = Path(root), Stopwatch()
    with watch("zoo"):
        zoo = collect_zoo(key, zoo_config, root, seed=seed, progress=progress, device=device)
    cfg = seeded_pdiff_config(config, seed)
    folder = root / "generators" / "seeds"
    gens, samples = {}, {}
    variants = (("aligned", cfg), ("unaligned", replace(cfg, align="none")))
    for name, c in variants:
        with watch(f"fit_{name}"):
            gens[name] = fit_or_load(zoo, c, folder / seeded_name(name, seed), progress=progress, device=device)
    weights = [t for g in gens.values() for m in (g.ae, g.denoiser) for t in m.state_dict().values()]
    cache = folder / seeded_name("experiment", seed)
    key_of_run = {"zoo": data_fingerprint(zoo.vectors()), "generators": data_fingerprint(*weights),
                  "n_samples": n_samples, "sampler": sampler, "steps": steps, "seed": seed,
                  "reference": cfg.align_reference}
    saved = load_results(cache, key_of_run)
    if saved is not None:  # a report's second run: samples and evaluations as the first run computed them
        f = saved.frames
        result = SeedsResult(f["table"], f["novelty"], f["barriers"], f["curves"], saved.tensors["aligned"],
                             dict(saved.results))
        samples = {name: saved.tensors[f"samples.{name}"] for name, _ in variants}
        return SeedsRun(key, zoo, gens, samples, result, {**watch.seconds, **saved.extra["seconds"],
                                                          "total": watch.total})
    for name, _ in variants:
        with watch(f"sample_{name}"):
            samples[name] = gens[name].sample(n_samples, sampler=sampler, steps=steps if sampler == "ddim" else None,
                                              seed=seed)
    with watch("evaluate"):
        result = seeds_evaluation(zoo, samples, reference=cfg.align_reference, seed=seed, device=device)
    atomic_write_csv(folder / f"{seeded_name('evaluation', seed)}.csv", result.table, index=True)
    save_results(cache, key_of_run, StoredResults(
        frames={"table": result.table, "novelty": result.novelty, "barriers": result.barriers,
                "curves": result.curves},
        tensors={"aligned": result.aligned, **{f"samples.{k}": v for k, v in samples.items()}},
        results=result.results, single={},
        extra={"seconds": {k: v for k, v in watch.seconds.items() if k.startswith(("sample", "evaluate"))}}))
    return SeedsRun(key, zoo, gens, samples, result, {**watch.seconds, "total": watch.total})


@dataclass
class MemorisationRun:
    """What :func:`memorisation_experiment` computes for one dense zoo and its p-diff generator."""

    key: str
    zoo: Zoo
    generator: PDiff
    analysis: MemorisationResult         # sets, IoU, novelty frame, matched accuracy, nearest-neighbour distances
    seconds: dict[str, float]            # per stage: zoo, fit, analysis, total


def memorisation_experiment(key: str, zoo_config: ZooConfig, config: PDiffConfig, root: str | Path, *,
                            n_samples: int = 100, seed: int = 0, progress: bool = False,
                            device: DeviceLike = "cpu") -> MemorisationRun:
    """Is the p-diff generator of one dense zoo memorising: the zoo and generator of :func:`pdiff_experiment`
    (collected or fitted, else resumed under ``root``), then :func:`~workbench.evaluation.memorisation.
    memorisation_analysis` of ``n_samples`` generated models against every baseline."""
    root, watch = Path(root), Stopwatch()
    zoo, gen, _ = _zoo_and_generator(key, zoo_config, config, root, seed, progress, watch, device)
    with watch("analysis"):
        analysis = memorisation_analysis(zoo, gen, n_samples=n_samples, seed=seed)
    return MemorisationRun(key, zoo, gen, analysis, {**watch.seconds, "total": watch.total})
