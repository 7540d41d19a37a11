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

import contextlib
import hashlib
import io
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["Case", "CaseResult", "cli_case", "snapshot", "classify", "run_case", "run_matrix", "summarise",
           "all_cases"]

OUTCOMES = ("clear_error", "handled", "traceback", "silent", "data_lost")


@dataclass(frozen=True)
class Case:
    """One bad input: ``action(fx)`` runs it against the fixtures ``fx`` (see ``robustness.fixtures``).

    ``expect``: the exception type a clear error must have (``None``: the call must succeed and ``check(result,
    fx)`` must hold); ``match``: a regular expression (case-insensitive) its message must contain; ``guard(fx)``:
    the paths (files or directories) whose bytes must be identical before and after."""

    name: str
    group: str
    action: Callable[[Any], Any]
    expect: type[BaseException] | tuple[type[BaseException], ...] | None = ValueError
    match: str = ""
    check: Callable[[Any, Any], bool] | None = None
    guard: Callable[[Any], Iterable[Path]] | None = None
    cli: bool = False  # action returns (exit code, stdout, stderr) of ``cli.main``; see :func:`cli_case`


@dataclass
class CaseResult:
    """What happened when one case ran."""

    name: str
    group: str
    outcome: str
    detail: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def snapshot(paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (a missing path is recorded as missing)."""
    out: dict[str, str] = {}
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
        else:
            files = [p]
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else "<missing>"
    return out


def cli_case(name: str, group: str, argv: Callable[[Any], list[str]] | list[str], match: str, **kw: Any) -> Case:
    """A CLI case: ``python -m workbench <argv>`` must exit non-zero with one line on stderr matching ``match``
    and no traceback."""
    from ..cli import main

    def action(fx: Any) -> tuple[int, str, str]:
        args = argv(fx) if callable(argv) else list(argv)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as e:  # argparse's own errors exit with 2 and a usage line
                code = e.code if isinstance(e.code, int) else 1
        return int(code or 0), out.getvalue(), err.getvalue()

    return Case(name, group, action, expect=None, match=match, cli=True, **kw)


def classify(case: Case, fx: Any) -> CaseResult:
    """Run one case and say what happened (see the module docstring)."""
    t0 = time.perf_counter()
    try:
        guarded = list(case.guard(fx)) if case.guard else []
    except Exception as e:  # a case whose setup breaks is a defect of the matrix: it must show, not stop the run
        return CaseResult(case.name, case.group, "traceback", f"setup failed: {type(e).__name__}: {e}",
                          time.perf_counter() - t0)
    before = snapshot(guarded) if guarded else {}
    outcome, detail = "handled", ""
    try:
        result = case.action(fx)
    except BaseException as e:  # noqa: BLE001 — classifying every escape is the point
        if isinstance(e, KeyboardInterrupt):
            raise
        msg = f"{type(e).__name__}: {e}"
        if case.expect is not None and isinstance(e, case.expect) and re.search(case.match, str(e), re.I | re.S):
            outcome, detail = "clear_error", msg
        else:
            outcome = "traceback"
            detail = msg + "\n" + "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:])
    else:
        if case.cli:
            code, out, err = result
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            if "Traceback (most recent call last)" in err:
                outcome, detail = "traceback", err[-2000:]
            elif code == 0:
                outcome, detail = "silent", f"exit 0; stdout: {out[-300:]!r} stderr: {err[-300:]!r}"
            elif not re.search(case.match, err, re.I | re.S):
                outcome, detail = "traceback", f"exit {code} but stderr does not say {case.match!r}: {err[-500:]!r}"
            elif len(lines) > 2:
                outcome, detail = "traceback", f"{len(lines)} lines on stderr (one expected): {err[-800:]!r}"
            else:
                outcome, detail = "clear_error", err.strip()
        elif case.expect is not None:
            outcome, detail = "silent", f"no error; returned {str(result)[:300]}"
        elif case.check is not None:
            try:
                ok = bool(case.check(result, fx))
            except Exception as e:  # noqa: BLE001
                ok, detail = False, f"check raised {type(e).__name__}: {e}"
            if not ok:
                outcome, detail = "silent", detail or f"wrong result: {str(result)[:300]}"
    if guarded:
        after = snapshot(guarded)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if changed:
            outcome, detail = "data_lost", f"changed on disk: {changed[:5]}; was {outcome}: {detail}"
    return CaseResult(case.name, case.group, outcome, detail, time.perf_counter() - t0)


def run_case(case: Case, fx: Any) -> CaseResult:
    """Alias of :func:`classify` (one case, one result)."""
    return classify(case, fx)


def all_cases() -> list[Case]:
    """Every case of the matrix, in a stable order (names are unique)."""
    from . import cases_cli, cases_generator, cases_sampling, cases_zoo

    cases = [*cases_zoo.CASES, *cases_generator.CASES, *cases_sampling.CASES, *cases_cli.CASES]
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate robustness case names: {sorted(dup)}")
    return cases


def run_matrix(fx: Any, cases: list[Case] | None = None, progress: bool = False) -> list[CaseResult]:
    """Run every case (or ``cases``) against the fixtures."""
    from tqdm.auto import tqdm

    cases = all_cases() if cases is None else cases
    return [classify(c, fx) for c in tqdm(cases, desc="bad inputs", disable=not progress)]


def summarise(results: list[CaseResult], seconds_total: float) -> dict[str, Any]:
    """The counts the robustness benchmark prints."""
    count = {o: sum(r.outcome == o for r in results) for o in OUTCOMES}
    return {"bad_inputs": len(results), "clear_errors": count["clear_error"], "handled": count["handled"],
            "tracebacks": count["traceback"], "silent": count["silent"], "data_lost": count["data_lost"],
            "seconds_total": round(seconds_total, 1)}
