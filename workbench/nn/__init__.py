"""Networks of the generators: parameter autoencoder, 1D UNet denoiser."""

from .autoencoder import AEConfig, ParamAutoencoder
from .unet1d import UNet1D, UNetConfig

__all__ = ["AEConfig", "ParamAutoencoder", "UNet1D", "UNetConfig"]
