"""Cond P-Diff's vision setting at CPU size: styles (images), the feature network and metrics (features), the image
network (network), the style zoo (zoo), its evaluation and interpolation (evaluation), and the experiment."""
