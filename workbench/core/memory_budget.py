"""Run a function in a fresh child process under a memory budget and measure the child's peak resident set.

A benchmark that grows a model until one method stops scaling needs that method to *fail cleanly*. The budget is
on **resident memory** beyond what the child holds before the call (interpreter and imports): the parent samples
the child's resident set every few milliseconds and stops it when the budget is passed, and the child checks its
own high-water mark (``VmHWM``, kept exactly by the kernel) after the call, so a short burst between samples is not
missed either. The parent gets a :class:`BudgetResult` whatever happens (exception, signal, timeout).

An address-space cap (``RLIMIT_AS``) is kept as a *backstop* only, well above the budget: it turns one huge
allocation into a ``MemoryError`` inside the child instead of the kernel's OOM killer. It is not the budget itself
because virtual size depends on the machine, not on the work: thread stacks, malloc arenas and oneDNN's JIT buffers
reserve address space in amounts that vary with the CPU and glibc, and a tight virtual cap made a 2k-parameter run
fail on one machine and pass on another. Linux only (``/proc``).
"""

from __future__ import annotations

import errno
import importlib
import os
import pickle
import resource
import signal
import threading
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BudgetResult",
    "available_memory_mb",
    "default_budget_mb",
    "peak_rss_mb",
    "run_with_memory_budget",
]

_MIB = 1024 * 1024
# Substrings of RuntimeError messages with which torch (and C++ extensions) report a failed host allocation
_ALLOC_FAILURE_MARKERS = (
    "DefaultCPUAllocator: can't allocate memory",
    "not enough memory",
    "can't allocate memory",
    "Cannot allocate memory",
    "std::bad_alloc",
    "failed to map segment",  # ImportError: a shared library that no longer fits under the cap
)
# A child killed by a signal counts as over budget when its virtual size came this close to the cap: a failed
# allocation in C code that does not check for NULL ends in SIGSEGV/SIGABRT rather than in an exception
_NEAR_CAP_FRACTION = 0.05
_NEAR_CAP_MIN_MB = 64.0
_POLL_S = 0.02
# Default backstop: address space fn may map beyond the baseline, as (factor x budget + slack)
_BACKSTOP_FACTOR = 2.0
_BACKSTOP_SLACK_MB = 4096.0
# os.environ is process-wide: concurrent callers must not see (or restore) each other's temporary settings
_ENV_LOCK = threading.Lock()


@dataclass(frozen=True)
class BudgetResult:
    """What a function run under a memory budget returned, or why it did not."""

    ok: bool
    value: Any
    peak_rss_mb: float
    seconds: float
    error: str | None
    exceeded_budget: bool
    # RSS of the child right before fn was called (interpreter + imports): peak_rss_mb - baseline_rss_mb is
    # roughly what fn itself added. 0.0 when the child died before reaching fn.
    baseline_rss_mb: float = 0.0


def _proc_status_kib(path: str = "/proc/self/status") -> dict[str, int]:
    """The ``Vm*`` fields of a /proc status file, in KiB (empty when unreadable, e.g. the process is gone)."""
    fields: dict[str, int] = {}
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("Vm"):
                    key, _, rest = line.partition(":")
                    parts = rest.split()
                    if parts and parts[0].isdigit():
                        fields[key] = int(parts[0])
    except OSError:
        pass
    return fields


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MiB."""
    # VmHWM is the high-water mark of the *current* address space. ru_maxrss is not used first because Linux
    # carries the parent's peak across fork+exec into it, so a spawned child would report its parent's peak.
    hwm = _proc_status_kib().get("VmHWM")
    if hwm is not None:
        return hwm / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _meminfo_mb(field: str) -> float:
    """One field of /proc/meminfo, in MiB."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/meminfo has no {field} field")


def available_memory_mb() -> float:
    """Memory the kernel estimates can be allocated now without swapping (MemAvailable), in MiB."""
    return _meminfo_mb("MemAvailable")


def default_budget_mb(fraction: float = 1 / 3) -> float:
    """A budget for one benchmark child: ``fraction`` of the machine's total memory, at most 8192 MiB."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return min(8192.0, fraction * _meminfo_mb("MemTotal"))


def _is_allocation_failure(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) reports a failed host-memory allocation."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return True
        if isinstance(current, OSError) and current.errno == errno.ENOMEM:
            return True
        message = str(current)
        # GPU out-of-memory is not this budget: the cap limits host address space only
        if (
            isinstance(current, (RuntimeError, ImportError))
            and "CUDA" not in message
            and any(marker in message for marker in _ALLOC_FAILURE_MARKERS)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _budget_error(budget_mb: float, detail: str | None = None) -> str:
    """The error text of a result that failed on the budget."""
    text = f"memory budget of {budget_mb:g} MB exceeded"
    return f"{text} ({detail})" if detail else text


def _resident_error(budget_mb: float, resident_mb: float, baseline_mb: float, stopped: bool) -> str:
    """The error text of a child whose resident set passed baseline + budget."""
    how = "; the child was stopped" if stopped else ""
    return _budget_error(budget_mb, f"resident set reached {resident_mb:.0f} MiB, {resident_mb - baseline_mb:.0f} MiB "
                                    f"beyond its {baseline_mb:.0f} MiB baseline{how}; modules fn imports in its "
                                    "body count too: name them in preload=")


def _describe(exc: BaseException) -> str:
    """An exception as 'Type: message', trimmed so a huge message cannot flood the report."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:2000] + "..."


def _child_main(conn: Any, payload: bytes, budget_mb: float, address_space_mb: float, threads: int | None,
                preload: tuple[str, ...]) -> None:
    """Child entry: import, set the address-space backstop, call fn, check its peak, send the outcome back."""
    try:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        for name in preload:
            importlib.import_module(name)
        # Unpickling imports fn's module (and whatever it imports at top level), so that lands in the baseline
        fn, args, kwargs = pickle.loads(payload)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent as a result
        conn.send(("done", {"ok": False, "value": None, "peak_rss_mb": peak_rss_mb(), "seconds": 0.0,
                            "error": f"child setup failed: {_describe(exc)}", "exceeded_budget": False}))
        return

    # The backstop counts virtual memory, and importing torch alone reserves GBs of address space it never
    # touches, so it is set beyond the interpreter and its imports, not as an absolute size.
    status = _proc_status_kib()
    baseline_vm = status.get("VmSize", 0) * 1024
    baseline_rss_mb = status.get("VmRSS", 0) / 1024
    cap = baseline_vm + int(address_space_mb * _MIB)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    # Sent before the call so the parent can tell "killed near the cap" from any other death
    conn.send(("ready", {"cap_bytes": cap, "baseline_rss_mb": baseline_rss_mb}))

    # Only the soft limit is lowered, so it can be lifted again after fn: reporting must not fail on the budget
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    t0 = time.perf_counter()
    try:
        value = fn(*args, **kwargs)
        outcome: dict[str, Any] = {"ok": True, "value": value, "error": None, "exceeded_budget": False}
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from fn are reported too
        exceeded = _is_allocation_failure(exc)
        error = _budget_error(budget_mb, _describe(exc)) if exceeded else _describe(exc)
        if isinstance(exc, ImportError):
            # Almost always torch & co imported inside fn, whose reserved address space then counts as fn's
            error += "; a module fn imports in its body is charged to the budget: name it in preload="
        outcome = {"ok": False, "value": None, "error": error, "exceeded_budget": exceeded}
        del exc
    seconds = time.perf_counter() - t0
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    peak = peak_rss_mb()
    if outcome["ok"] and peak - baseline_rss_mb > budget_mb:
        # Finished between two of the parent's samples: the kernel's high-water mark still saw the overrun
        outcome = {"ok": False, "value": None, "exceeded_budget": True,
                   "error": _resident_error(budget_mb, peak, baseline_rss_mb, stopped=False)}
    outcome.update(peak_rss_mb=peak, seconds=seconds, baseline_rss_mb=baseline_rss_mb)
    try:
        conn.send(("done", outcome))
    except BaseException as exc:  # noqa: BLE001 - e.g. an unpicklable return value
        outcome.update(ok=False, value=None, exceeded_budget=False,
                       error=f"could not send the result back: {_describe(exc)}")
        conn.send(("done", outcome))


def _check_picklable_function(fn: Callable[..., Any]) -> None:
    """Raise TypeError unless fn can be pickled by reference (a module-level function or class)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    qualname = getattr(fn, "__qualname__", "")
    if isinstance(fn, types.LambdaType) and ("<lambda>" in qualname or "<locals>" in qualname):
        raise TypeError(
            f"run_with_memory_budget needs a module-level function (the child imports it by name), "
            f"got {qualname!r}; lambdas and functions defined inside functions cannot be sent to a spawned child"
        )


class _EnvForSpawn:
    """Temporarily set environment variables around starting a child, which inherits the environment at exec."""

    def __init__(self, updates: dict[str, str]) -> None:
        self._updates = updates
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        _ENV_LOCK.acquire()
        for key, value in self._updates.items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc_info: object) -> None:
        try:
            for key, old in self._saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
        finally:
            _ENV_LOCK.release()


def _signal_name(signum: int) -> str:
    """'SIGKILL' for 9, or 'unknown' for a number that is not a signal here."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown"


def run_with_memory_budget(
    fn: Callable[..., Any],
    *args: Any,
    budget_mb: float,
    timeout_s: float | None = None,
    threads: int | None = None,
    preload: Iterable[str] = (),
    address_space_mb: float | None = None,
    **kwargs: Any,
) -> BudgetResult:
    """Run fn(*args, **kwargs) in a fresh child process under a resident-memory budget; report its peak memory.

    ``fn`` must be a module-level function (the child is *spawned*, a fresh interpreter, and imports fn by
    name), and its arguments and return value must be picklable; a lambda or nested function raises TypeError
    before anything is started. A script calling this must guard its entry point with
    ``if __name__ == "__main__":``, because the spawned child re-imports the main module.

    ``budget_mb`` limits the resident memory fn adds *beyond* the child's baseline: the interpreter and the
    modules imported before the call (fn's module and its top-level imports, torch when ``threads`` is given,
    and every module named in ``preload``). A module fn imports lazily inside its body is charged to the budget
    (torch alone is ~500 MiB resident): name such modules in ``preload``. A child over budget is stopped and
    reported with ``exceeded_budget`` True; one that finishes over it (between two samples) is reported the same
    way, its value dropped.

    ``address_space_mb`` is the backstop on virtual memory beyond the baseline (default 2 x budget + 4096): one
    allocation past it fails inside the child with ``MemoryError``, also reported as over budget. A GPU (CUDA)
    context cannot be created under it.

    ``timeout_s`` bounds the wall time of the whole child (startup included); ``threads`` sets OMP/MKL/OpenBLAS
    threads in the child's environment and ``torch.set_num_threads`` there. ``peak_rss_mb`` of the result is the
    child's own high-water resident set (VmHWM: interpreter and imports included, see ``baseline_rss_mb``); when
    the child dies without reporting it is the parent's last sample of it, a lower bound.
    """
    _check_picklable_function(fn)
    if not budget_mb > 0:
        raise ValueError(f"budget_mb must be positive, got {budget_mb}")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive or None, got {timeout_s}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads}")
    if address_space_mb is None:
        address_space_mb = _BACKSTOP_FACTOR * budget_mb + _BACKSTOP_SLACK_MB
    if not address_space_mb >= budget_mb:
        raise ValueError(f"address_space_mb ({address_space_mb}) must be at least budget_mb ({budget_mb}): "
                         "resident memory is always mapped")
    preload = tuple(preload)
    try:
        payload = pickle.dumps((fn, args, kwargs))
    except Exception as exc:
        raise TypeError(f"fn and its arguments must be picklable to reach the child: {_describe(exc)}") from exc

    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    # glibc reads MALLOC_ARENA_MAX once, at the child's first malloc: it must be in the environment at exec.
    # Fewer arenas keep a threaded child's virtual size (what the backstop counts) near what it actually uses.
    env = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
    if threads is not None:
        env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})

    recv_conn, send_conn = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(send_conn, payload, budget_mb, address_space_mb, threads, preload),
                          daemon=True)
    with _EnvForSpawn(env):
        process.start()
    # The parent's copy of the write end must be closed, or a dead child would never show as EOF on the pipe
    send_conn.close()
    return _collect(process, recv_conn, budget_mb, address_space_mb, timeout_s)


def _collect(process: Any, conn: Any, budget_mb: float, address_space_mb: float,
             timeout_s: float | None) -> BudgetResult:
    """Wait for the child's messages (or its death, or the timeout) and always reap it."""
    start = time.perf_counter()
    deadline = None if timeout_s is None else start + timeout_s
    status_path = f"/proc/{process.pid}/status"
    ready: dict[str, Any] | None = None
    ready_at = start
    done: dict[str, Any] | None = None
    sampled: dict[str, int] = {}
    timed_out = False
    over_budget = False
    finished = False  # the child reported, or is gone: it gets time to exit on its own before any signal
    try:
        while done is None:
            if conn.poll(_POLL_S):
                try:
                    kind, body = conn.recv()
                except EOFError:  # the child exited (or died) without sending anything more
                    finished = True
                    break
                if kind == "ready":
                    ready, ready_at = body, time.perf_counter()
                else:
                    done, finished = body, True
                continue
            # Sampled while the child lives: if it is killed, these are the only numbers left about it
            sampled = _proc_status_kib(status_path) or sampled
            if ready is not None and sampled.get("VmRSS", 0) / 1024 - ready["baseline_rss_mb"] > budget_mb:
                over_budget = True  # stopped below, by _reap with no grace
                break
            if not process.is_alive() and not conn.poll(0):
                finished = True
                break
            if deadline is not None and time.perf_counter() >= deadline:
                timed_out = True
                break
    finally:
        conn.close()
        exitcode = _reap(process, grace_s=5.0 if finished else 0.0)

    baseline_rss_mb = ready["baseline_rss_mb"] if ready else 0.0
    if done is not None:
        done.setdefault("baseline_rss_mb", baseline_rss_mb)
        return BudgetResult(**done)

    peak = sampled.get("VmHWM", 0) / 1024
    seconds = time.perf_counter() - ready_at
    if over_budget:
        resident = max(peak, sampled.get("VmRSS", 0) / 1024)
        return BudgetResult(ok=False, value=None, peak_rss_mb=resident, seconds=seconds,
                            error=_resident_error(budget_mb, resident, baseline_rss_mb, stopped=True),
                            exceeded_budget=True, baseline_rss_mb=baseline_rss_mb)
    if timed_out:
        return BudgetResult(ok=False, value=None, peak_rss_mb=peak, seconds=seconds,
                            error=f"timed out after {timeout_s:g} s", exceeded_budget=False,
                            baseline_rss_mb=baseline_rss_mb)
    code = exitcode
    if code is not None and code < 0:
        error = f"child died with signal {-code} ({_signal_name(-code)})"
    else:
        error = f"child exited with code {code} without reporting a result"
    exceeded = False
    if ready is not None and "VmPeak" in sampled:
        # Half the backstop at most, so a tiny one does not make every death look like an overrun
        margin = min(max(_NEAR_CAP_MIN_MB, _NEAR_CAP_FRACTION * address_space_mb), address_space_mb / 2) * _MIB
        exceeded = sampled["VmPeak"] * 1024 >= ready["cap_bytes"] - margin
    if exceeded:
        error = _budget_error(budget_mb, error)
    return BudgetResult(ok=False, value=None, peak_rss_mb=peak, seconds=seconds, error=error,
                        exceeded_budget=exceeded, baseline_rss_mb=baseline_rss_mb)


def _reap(process: Any, grace_s: float) -> int | None:
    """Make sure the child is gone (grace_s to exit, then SIGTERM, then SIGKILL), release it; its exit code."""
    process.join(grace_s)
    if process.is_alive():
        process.terminate()
        process.join(2.0)
    if process.is_alive():
        process.kill()
        process.join()
    exitcode = process.exitcode
    process.close()
    return exitcode
