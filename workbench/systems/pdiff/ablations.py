"""Ablations that return tables (each row one variant, accuracies in percent)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbench.evaluation.evaluate import MemberEvaluator
from workbench.evaluation.memorisation import max_iou_to, median, nearest_neighbours
from workbench.generator.latent_diffusion import PDiff, PDiffConfig, data_fingerprint
from workbench.zoo import ZooConfig, collect
from workbench.zoo.protocol import ParameterZoo

__all__ = ["noise_augmentation_ablation", "training_size_ablation", "noise_generation_ablation", "depth_ablation",
           "ablation_config"]

NOISE_VARIANTS = {"none": (0.0, 0.0), "input only": (None, 0.0), "latent only": (0.0, None), "both": (None, None)}


def noise_augmentation_ablation(zoo: ParameterZoo, config: PDiffConfig, *, steps: int | None = None,
                                perturb: float = 0.1, seed: int = 0, run_dir: str | Path | None = None,
                                progress: bool = False) -> pd.DataFrame:
    """Train the p-diff autoencoder with no / input / latent / both noise augmentations.

    Columns: reconstruction accuracy of the zoo, and accuracy of models decoded from latents perturbed by
    Gaussian noise of ``perturb`` × the latent std — a stand-in for the imprecise latents a diffusion model
    produces, which is what latent-noise augmentation is meant to make the decoder robust to."""

    data = zoo.data()
    ev = MemberEvaluator(zoo.model(), zoo.spec, probe=data.x_test)
    vectors = zoo.vectors()
    rows = []
    for name, (a_in, a_lat) in NOISE_VARIANTS.items():
        cfg = config if steps is None else replace(config, ae_train=replace(config.ae_train, steps=steps))
        gen = PDiff(cfg)
        d = Path(run_dir) / name.replace(" ", "_") if run_dir else None
        gen.fit_autoencoder(vectors, run_dir=d, progress=progress, input_noise=a_in, latent_noise=a_lat)
        lat = gen.encode(vectors)
        g = torch.Generator().manual_seed(seed)
        noisy = lat + perturb * lat.std() * torch.randn(lat.shape, generator=g)
        rec = ev(gen.decode(lat), data.x_test, data.y_test).accuracy
        pert = ev(gen.decode(noisy), data.x_test, data.y_test).accuracy
        mse = float(((gen.normaliser.transform(gen.decode(lat)) - gen.normaliser.transform(vectors)) ** 2).mean())
        rows.append({"variant": name,
                     "input_noise": cfg.input_noise if a_in is None else a_in,
                     "latent_noise": cfg.latent_noise if a_lat is None else a_lat,
                     "reconstruction_mse": mse, "reconstruction_acc": float(rec.mean()),
                     "perturbed_latent_acc": float(pert.mean()), "perturbed_latent_min": float(pert.min())})
    return pd.DataFrame(rows).set_index("variant")


def _fit_key(config, vectors: torch.Tensor) -> str:
    return data_fingerprint(vectors, config=config.to_dict())[:16]


def _fit_cached(vectors: torch.Tensor, config, cache_dir: Path | None):
    """Fit a p-diff generator, or load the one fitted on exactly these vectors with exactly this config."""

    if cache_dir is None:
        return PDiff(config).fit(vectors, progress=False)
    d = Path(cache_dir) / _fit_key(config, vectors)
    if (d / "pdiff.json").exists():
        return PDiff.load(d)
    gen = PDiff(config).fit(vectors, run_dir=d / "checkpoints", progress=False)
    gen.save(d)
    return gen


def _score(gen, evaluator, data, original_test, original_vectors, n: int, seed: int) -> dict:
    v = gen.sample(n, sampler="ddim", steps=50, seed=seed)
    res = evaluator(v, data.x_test, data.y_test)
    iou = max_iou_to(res, original_test)
    l2, _ = nearest_neighbours(v, original_vectors)
    a = res.accuracy
    return {"generated_best": float(a.max()), "generated_mean": float(a.mean()),
            "generated_median": float(np.median(a)), "generated_min": float(a.min()),
            "max_iou_to_original_median": median(iou), "l2_to_nearest_original_median": median(l2)}


def ablation_config(config, steps: tuple[int, int] | None):
    """The p-diff config with fewer training steps (ablations train many generators)."""
    if steps is None:
        return config
    return replace(config, ae_train=replace(config.ae_train, steps=steps[0]),
                   diffusion_train=replace(config.diffusion_train, steps=steps[1]))


def training_size_ablation(zoo: ParameterZoo, config: PDiffConfig, *, ks=(1, 10, 50, 200), n_samples: int = 50,
                           seed: int = 0, steps: tuple[int, int] | None = None, cache_dir: str | Path | None = None
                           ) -> pd.DataFrame:
    """Generators fitted on K evenly spaced members: stability (best/mean/median) and novelty vs K.

    K = 1 duplicates the single member (a generator needs two rows to fit its statistics)."""
    cfg = ablation_config(config, steps)
    data, orig = zoo.data(), zoo.vectors()
    ev = MemberEvaluator(zoo.model(), zoo.spec, probe=data.x_test)
    orig_test = ev(orig, data.x_test, data.y_test)
    rows = []
    for k in ks:
        k_eff = min(k, len(orig))
        pick = torch.linspace(0, len(orig) - 1, k_eff).round().long()
        train = orig[pick] if k_eff > 1 else orig[pick].repeat(2, 1)
        gen = _fit_cached(train, cfg, cache_dir)
        rows.append({"K": k_eff, **_score(gen, ev, data, orig_test, orig, n_samples, seed)})
    return pd.DataFrame(rows).set_index("K")


def noise_generation_ablation(zoo: ParameterZoo, config: PDiffConfig, *, n_samples: int = 50, seed: int = 0,
                              steps: tuple[int, int] | None = None, cache_dir: str | Path | None = None
                              ) -> pd.DataFrame:
    """Whole generators (AE + diffusion) trained with none / input / latent / both noise augmentations."""
    base = ablation_config(config, steps)
    data, orig = zoo.data(), zoo.vectors()
    ev = MemberEvaluator(zoo.model(), zoo.spec, probe=data.x_test)
    orig_test = ev(orig, data.x_test, data.y_test)
    rows = []
    for name, (a_in, a_lat) in NOISE_VARIANTS.items():
        cfg = replace(base, input_noise=base.input_noise if a_in is None else a_in,
                      latent_noise=base.latent_noise if a_lat is None else a_lat)
        gen = _fit_cached(orig, cfg, cache_dir)
        rows.append({"variant": name, "input_noise": cfg.input_noise, "latent_noise": cfg.latent_noise,
                     **_score(gen, ev, data, orig_test, orig, n_samples, seed)})
    return pd.DataFrame(rows).set_index("variant")


def depth_ablation(zoo_config: ZooConfig, config: PDiffConfig, selections: dict[str, tuple[str, ...]],
                   run_dir: str | Path, *, n_samples: int = 50, seed: int = 0, steps: tuple[int, int] | None = None,
                   max_len: int = 1024) -> pd.DataFrame:
    """Which layers are generated: one dense-checkpoint zoo per selection (same base model), one generator each.

    Long vectors are folded into several input rows so the autoencoder's sequence stays ≤ ``max_len``."""


    run_dir = Path(run_dir)
    rows = []
    for name, select in selections.items():
        zc = replace(zoo_config, name=f"{zoo_config.name}_{name}", select=tuple(select))
        zoo = collect(zc, run_dir / "zoos" / name, progress=False, base_cache=run_dir / "bases")
        cfg = ablation_config(config, steps)
        fold = max(1, math.ceil(zoo.spec.numel / max_len))
        cfg = replace(cfg, fold=fold)
        data, orig = zoo.data(), zoo.vectors()
        ev = MemberEvaluator(zoo.model(), zoo.spec, probe=data.x_test)
        orig_test = ev(orig, data.x_test, data.y_test)
        gen = _fit_cached(orig, cfg, run_dir / "generators")
        rows.append({"layers": name, "params": zoo.spec.numel, "fold": fold,
                     "original_mean": float(orig_test.accuracy.mean()),
                     **_score(gen, ev, data, orig_test, orig, n_samples, seed)})
    return pd.DataFrame(rows).set_index("layers")
