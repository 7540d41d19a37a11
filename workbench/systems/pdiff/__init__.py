"""p-diff: parameter autoencoder + latent diffusion (generator), weight matching for independent seeds
(alignment, seeds), ablations, and the experiment its notebooks and benchmarks share."""

from workbench.systems.pdiff.generator import PDiff, PDiffConfig, fit_or_load

__all__ = ["PDiff", "PDiffConfig", "fit_or_load"]
