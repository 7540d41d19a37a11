"""Wall-clock seconds per named stage, for benchmarks and experiments."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

__all__ = ["Stopwatch"]


class Stopwatch:
    """Seconds per stage: ``with watch("fit"): ...``; a stage timed twice adds up. ``total`` counts from creation."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    @property
    def total(self) -> float:
        """Seconds since the stopwatch was created."""
        return time.perf_counter() - self._start

    def rounded(self, digits: int = 2, *, total: bool = True) -> dict[str, float]:
        """The stages' seconds rounded for JSON (and ``"total"`` unless ``total=False``)."""
        out = {k: round(v, digits) for k, v in self.seconds.items()}
        if total:
            out["total"] = round(self.total, digits)
        return out
