"""Evaluation: many members at once (evaluate), the baselines that need no generator (baselines), the results table
and its verdict (tables), and memorisation analysis (memorisation)."""
