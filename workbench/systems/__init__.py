"""One subpackage per published system, each over the shared layers (core, data, nn, zoo, evaluation):
p-diff (pdiff) and Cond P-Diff (cond_pdiff, with its style setting in cond_pdiff.style)."""
