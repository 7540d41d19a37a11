"""Networks of the generators: parameter autoencoder, 1D UNet denoiser."""

from workbench.nn.autoencoder import AEConfig, ParamAutoencoder
from workbench.nn.unet1d import UNet1D, UNetConfig

__all__ = ["AEConfig", "ParamAutoencoder", "UNet1D", "UNetConfig"]
