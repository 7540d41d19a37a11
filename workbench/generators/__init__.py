"""Generators: fit on a zoo, sample parameter vectors."""

from .cond_pdiff import CondPDiff, CondPDiffConfig, fit_or_load_cond
from .pdiff import PDiff, PDiffConfig, fit_or_load

__all__ = ["PDiff", "PDiffConfig", "fit_or_load", "CondPDiff", "CondPDiffConfig", "fit_or_load_cond"]
