"""The machinery of the bad-input matrix: a case, how it is run and classified, and the counts.

See the package docstring for what each outcome means."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import runpy
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["OUTCOMES", "Case", "CaseResult", "classify", "cli_case", "run_case", "snapshot", "summarise"]

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

    def action(fx: Any) -> tuple[int, str, str]:
        args = argv(fx) if callable(argv) else list(argv)
        out, err = io.StringIO(), io.StringIO()
        saved_argv = sys.argv
        sys.argv = ["python -m workbench", *args]
        # exactly what `python -m workbench ...` runs (workbench/__main__.py), in this process to save the start-up
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                runpy.run_module("workbench", run_name="__main__", alter_sys=False)
            code = 0
        except SystemExit as e:  # __main__ exits with main()'s status; argparse's own errors exit with 2
            code = e.code if isinstance(e.code, int) else 1
        finally:
            sys.argv = saved_argv
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


def summarise(results: list[CaseResult], seconds_total: float) -> dict[str, Any]:
    """The counts the robustness benchmark prints."""
    count = {o: sum(r.outcome == o for r in results) for o in OUTCOMES}
    return {"bad_inputs": len(results), "clear_errors": count["clear_error"], "handled": count["handled"],
            "tracebacks": count["traceback"], "silent": count["silent"], "data_lost": count["data_lost"],
            "seconds_total": round(seconds_total, 1)}
