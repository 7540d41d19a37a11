"""Cond P-Diff: condition-embedded latent diffusion of LoRA parameters (generator), its per-task evaluation, and the
style setting (style/)."""

from workbench.systems.cond_pdiff.generator import CondPDiff, CondPDiffConfig, fit_or_load_cond

__all__ = ["CondPDiff", "CondPDiffConfig", "fit_or_load_cond"]
