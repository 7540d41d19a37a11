"""Ablations that return tables (each row one variant, accuracies in percent)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from .evaluate import MemberEvaluator
from .train_loop import LoopConfig

__all__ = ["noise_augmentation_ablation"]

NOISE_VARIANTS = {"none": (0.0, 0.0), "input only": (None, 0.0), "latent only": (0.0, None), "both": (None, None)}


def noise_augmentation_ablation(zoo, config, *, steps: int | None = None, perturb: float = 0.1, seed: int = 0,
                                run_dir: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """Train the p-diff autoencoder with no / input / latent / both noise augmentations.

    Columns: reconstruction accuracy of the zoo, and accuracy of models decoded from latents perturbed by
    Gaussian noise of ``perturb`` × the latent std — a stand-in for the imprecise latents a diffusion model
    produces, which is what latent-noise augmentation is meant to make the decoder robust to."""
    from .generators.pdiff import PDiff

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
