"""The shared parameter generator every flat-vector system builds on (p-diff's recipe): normaliser → parameter
autoencoder (conv AE, β-VAE, or PCA) → latent diffusion (UNet1D or MLP denoiser, DDPM/DDIM), optionally on members
aligned by weight matching first (alignment). p-diff uses it as it is, Cond P-Diff adds a condition to it; it is a
shared layer (not inside systems/pdiff) so that a system never imports another system."""

from workbench.generator.latent_diffusion import PDiff, PDiffConfig, fit_or_load

__all__ = ["PDiff", "PDiffConfig", "fit_or_load"]
