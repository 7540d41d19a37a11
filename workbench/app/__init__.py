"""The application layer: command line (cli), benchmarks (bench), report, notebook widgets and plots, presets, and
the bad-input matrix (robustness). It imports the systems; nothing below imports it."""
