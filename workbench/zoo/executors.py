"""Where the independent work units of a zoo collection run: in this process (:class:`LocalExecutor`) or as Ray
tasks (:class:`RayExecutor`) on a Ray started here or on an existing cluster.

An executor only *computes*: it maps a pure function over work units (today a chunk of the seeds protocol's
members; the LoRA, style and dataset zoos' units are still closures and run locally) and hands each result back to
the collecting process, which alone writes to the zoo (one atomic shard per unit, its checksum, the manifest). So storage, resume and checksums are those of a local collection:
a unit whose worker dies is retried by Ray and committed once, and units already on disk are never submitted.
Each unit computes exactly what the local loop computes for it, so a Ray collection is bit-identical to a local
one for the same seeds (tested).

Ray is an optional dependency (``pip install 'workbench[distributed]'``); nothing imports it until a
:class:`RayExecutor` first runs a unit.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor", "executor_scope", "EXECUTORS",
           "RayMissingError"]

EXECUTORS = ("local", "ray")

T = TypeVar("T")
R = TypeVar("R")


class RayMissingError(ImportError):
    """``executor="ray"`` was asked for but Ray is not installed."""


class Executor(Protocol):
    """Maps a function over work units; yields ``(unit, result)`` as each finishes (any order)."""

    name: str

    def map_unordered(self, fn: Callable[[T], R], units: Sequence[T]) -> Iterator[tuple[T, R]]: ...


class LocalExecutor:
    """Every unit in this process, one after the other (the default)."""

    name = "local"

    def map_unordered(self, fn: Callable[[T], R], units: Sequence[T]) -> Iterator[tuple[T, R]]:
        """Run ``fn`` on each unit in order."""
        for unit in units:
            yield unit, fn(unit)

    def __repr__(self) -> str:
        return "LocalExecutor()"


_RAY_MISSING = ("executor='ray' needs Ray: pip install 'workbench[distributed]' (or 'ray'), or use "
                "executor='local'")


def ray_available() -> bool:
    """Whether Ray can be imported here."""
    return importlib.util.find_spec("ray") is not None


def _package_parent() -> str:
    import workbench

    return str(Path(workbench.__file__).resolve().parent.parent)


class RayExecutor:
    """Each unit as a Ray task of ``cpus_per_task`` CPUs, retried ``max_retries`` times if its worker dies.

    ``address``: an existing cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts a Ray on
    this machine with ``num_cpus`` CPUs (None: all of them) that is shut down again by :meth:`close`. Workers of a
    local Ray import the same ``workbench`` as this process (its folder is put on their ``PYTHONPATH``); on a
    cluster, install the same workbench version on every node, or pass ``runtime_env`` (e.g.
    ``{"py_modules": [...]}``)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, cpus_per_task: float = 1,
                 max_retries: int = 3, runtime_env: dict[str, Any] | None = None) -> None:
        if cpus_per_task <= 0 or max_retries < 0:
            raise ValueError(f"cpus_per_task must be > 0 and max_retries >= 0, got {cpus_per_task}, {max_retries}")
        if num_cpus is not None and num_cpus < 1:
            raise ValueError(f"num_cpus must be >= 1 (or None for all), got {num_cpus}")
        if not ray_available():  # said now, before a collection writes anything
            raise RayMissingError(_RAY_MISSING)
        self.address, self.num_cpus = address, num_cpus
        self.cpus_per_task, self.max_retries = cpus_per_task, max_retries
        self.runtime_env = runtime_env
        self._started_here = False

    def _ray(self):
        try:
            import ray
        except ImportError as e:
            raise RayMissingError(_RAY_MISSING) from e
        if not ray.is_initialized():
            env = dict(self.runtime_env or {})
            if self.address is None:
                # the workers of a local Ray must import this very workbench (a checkout not installed, too), and
                # a fault injected into this process (tests) must reach them
                vars_ = {"PYTHONPATH": os.pathsep.join(
                    p for p in (_package_parent(), os.environ.get("PYTHONPATH", "")) if p)}
                vars_.update({k: v for k, v in os.environ.items() if k.startswith("WORKBENCH_")})
                env["env_vars"] = {**vars_, **env.get("env_vars", {})}
            kw: dict[str, Any] = {"address": self.address, "runtime_env": env or None, "log_to_driver": False,
                                  "ignore_reinit_error": True}
            if self.address is None:
                kw.update(num_cpus=self.num_cpus or os.cpu_count(), include_dashboard=False)
            ray.init(**kw)
            self._started_here = True
        return ray

    def map_unordered(self, fn: Callable[[T], R], units: Sequence[T]) -> Iterator[tuple[T, R]]:
        """Submit every unit at once; yield each result as soon as its task finishes."""
        units = list(units)
        if not units:
            return
        ray = self._ray()
        remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=self.max_retries)(fn)
        pending = {remote.remote(u): u for u in units}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    unit = pending.pop(ref)
                    yield unit, ray.get(ref)
        finally:
            for ref in pending:  # an error (or the caller stopping early) cancels what has not run yet
                ray.cancel(ref)

    def close(self) -> None:
        """Shut down the Ray this executor started (a cluster it only connected to is left running)."""
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus!r})"


def make_executor(executor: str | Executor | None = None, *, address: str | None = None,
                  num_cpus: int | None = None) -> Executor:
    """An executor from a name (``"local"``, ``"ray"``) or an executor object (returned as is)."""
    if executor is None or executor == "local":
        if address is not None:
            raise ValueError("an address is for executor='ray'; the local executor runs in this process")
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor(address, num_cpus=num_cpus)
    if isinstance(executor, str):
        raise ValueError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    if not callable(getattr(executor, "map_unordered", None)):
        raise TypeError(f"executor must be one of {EXECUTORS} or have a map_unordered(fn, units) method, "
                        f"got {executor!r}")
    return executor



@contextmanager
def executor_scope(executor: str | Executor | None = None, *, address: str | None = None,
                   num_cpus: int | None = None) -> Iterator[Executor]:
    """:func:`make_executor`, closing at the end what it made from a name (a Ray it started is shut down); an
    executor object passed in stays the caller's to close."""
    made = make_executor(executor, address=address, num_cpus=num_cpus)
    try:
        yield made
    finally:
        if made is not executor and callable(getattr(made, "close", None)):
            made.close()
