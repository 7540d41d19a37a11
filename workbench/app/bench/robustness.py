"""``bench robustness``: the bad-input matrix, counted."""


from __future__ import annotations

from typing import Any

import pandas as pd

from workbench.app.report import REPO
from workbench.app.robustness import run_matrix, summarise
from workbench.app.robustness.fixtures import Fixtures
from workbench.core.io import atomic_write_csv
from workbench.core.timing import Stopwatch

__all__ = ["bench_robustness"]



def bench_robustness(preset: str) -> dict[str, Any]:
    """The bad-input matrix of ``workbench.app.robustness`` (the same cases ``tests/test_bad_inputs.py`` asserts), run
    once and counted from what happened; per-case outcomes go to ``runs/robustness/cases.csv``. The preset is not
    used: the matrix builds its own seconds-sized fixtures."""


    watch = Stopwatch()
    fx = Fixtures()
    try:
        results = run_matrix(fx, progress=False)
    finally:
        fx.cleanup()
    out = summarise(results, watch.total)
    table = pd.DataFrame([{"case": r.name, "group": r.group, "outcome": r.outcome, "seconds": round(r.seconds, 2),
                           "detail": r.detail[:300]} for r in results])
    atomic_write_csv(REPO / "runs" / "robustness" / "cases.csv", table)
    bad = table[~table["outcome"].isin(["clear_error", "handled"])]
    for _, r in bad.iterrows():
        print(f"[robustness] {r['outcome']}: {r['case']}: {r['detail'][:200]}", flush=True)
    out["groups"] = {g: int(n) for g, n in table.groupby("group").size().items()}
    return out
