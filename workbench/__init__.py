"""workbench: weight-space generative modelling."""
