"""Deliberate crashes for tests: ``WORKBENCH_FAULT=<point>:<k>`` ends the process at the k-th pass through
``fault_point(<point>)``, so a test can kill a run at the worst moment (a shard committed but the trajectory not yet
saved, a training stage between two checkpoints, a save half published) deterministically."""

from __future__ import annotations

import os

__all__ = ["fault_point", "FAULT_EXIT_CODE"]

# ``WORKBENCH_FAULT_ONCE=<point>:<marker file>``: the first process (of any number, e.g. Ray workers) to pass
# ``<point>`` creates the marker and dies; every later pass, in any process, goes on — one lost worker, exactly.

FAULT_EXIT_CODE = 17
_COUNT: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Exit the process with code 17 at the k-th call when ``WORKBENCH_FAULT=<name>:<k>`` is set (or at the first
    call of all processes when ``WORKBENCH_FAULT_ONCE=<name>:<marker>`` is)."""
    once = os.environ.get("WORKBENCH_FAULT_ONCE", "")
    if once.startswith(name + ":"):
        try:
            os.close(os.open(once.split(":", 1)[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os._exit(FAULT_EXIT_CODE)
    spec = os.environ.get("WORKBENCH_FAULT", "")
    if not spec.startswith(name + ":"):
        return
    _COUNT[name] = _COUNT.get(name, 0) + 1
    if _COUNT[name] >= int(spec.split(":", 1)[1]):
        os._exit(FAULT_EXIT_CODE)
