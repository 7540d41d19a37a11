"""Bad-input cases: sampling (see workbench.robustness for how a case is classified)."""

from __future__ import annotations

from . import Case, cli_case  # noqa: F401

CASES: list[Case] = []
