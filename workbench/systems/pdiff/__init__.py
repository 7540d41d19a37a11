"""p-diff: the shared generator (``workbench.generator``: parameter autoencoder + latent diffusion, weight matching)
on dense-checkpoint and independent-seed zoos — entire models from seeds (seeds), ablations, and the experiments its
notebooks and benchmarks share (experiment)."""

from workbench.generator.latent_diffusion import PDiff, PDiffConfig, fit_or_load

__all__ = ["PDiff", "PDiffConfig", "fit_or_load"]
