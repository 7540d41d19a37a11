"""The bad-input matrix: every misuse and fault we know of, with the outcome it must have.

Each :class:`Case` runs one bad input (a corrupt zoo, a tampered generator, a wrong argument, a CLI typo, a path
that escapes its folder, an interrupted run) against the public API or the CLI and is classified from what
actually happened:

- ``clear_error``: the expected exception type was raised and its message names the problem (``match``);
- ``handled``: no error was expected (the input is odd but legal) and the result passed its ``check``;
- ``traceback``: some other exception escaped (or, at the CLI, a traceback was printed or the exit code was 0);
- ``silent``: an error was expected but nothing was raised, or a legal input gave a wrong result;
- ``data_lost``: whatever else happened, files the case guards (a zoo, a saved generator) changed on disk.

``tests/test_bad_inputs.py`` asserts every case is ``clear_error`` or ``handled``; ``python -m workbench bench
robustness`` runs the same matrix and prints the counts, so a regression shows up as a number.
"""

from __future__ import annotations

from typing import Any

from workbench.app.robustness import cases_cli, cases_generator, cases_sampling, cases_zoo
from workbench.app.robustness.matrix import (
    OUTCOMES,
    Case,
    CaseResult,
    classify,
    cli_case,
    run_case,
    snapshot,
    summarise,
)
from workbench.core.progress import tqdm

__all__ = ["OUTCOMES", "Case", "CaseResult", "all_cases", "classify", "cli_case", "run_case", "run_matrix", "snapshot",
           "summarise"]


def all_cases() -> list[Case]:
    """Every case of the matrix, in a stable order (names are unique)."""
    # imported on demand: the case files pull in every layer of the package (torch, zoos, generators, the CLI),
    # which the matrix machinery itself does not need

    cases = [*cases_zoo.CASES, *cases_generator.CASES, *cases_sampling.CASES, *cases_cli.CASES]
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate robustness case names: {sorted(dup)}")
    return cases


def run_matrix(fx: Any, cases: list[Case] | None = None, progress: bool = False) -> list[CaseResult]:
    """Run every case (or ``cases``) against the fixtures."""
    cases = all_cases() if cases is None else cases
    return [classify(c, fx) for c in tqdm(cases, desc="bad inputs", disable=not progress)]


