"""Generators: fit on a zoo, sample parameter vectors."""

from .pdiff import PDiff, PDiffConfig, fit_or_load

__all__ = ["PDiff", "PDiffConfig", "fit_or_load"]
