"""run_with_memory_budget: a spawned child under a resident-memory budget (and an address-space backstop) reports its
value, its peak, or why it failed."""

from __future__ import annotations

import mmap
import os
import signal
import time

import numpy as np
import pytest

from workbench.core.memory_budget import (
    BudgetResult,
    available_memory_mb,
    default_budget_mb,
    peak_rss_mb,
    run_with_memory_budget,
)

# Helpers the spawned child imports by name: pytest puts tests/ on sys.path and spawn passes sys.path on


def _allocate_mb(n: int) -> int:
    """Allocate n MiB with numpy and touch every page, so they are resident; return n."""
    block = np.ones(n * 1024 * 1024, dtype=np.uint8)
    return int(block.size // (1024 * 1024))


def _return_value(x: int, *, plus: int = 0) -> dict[str, int]:
    """A trivial call: shows args and kwargs arrive and the value comes back."""
    return {"sum": x + plus, "pid": os.getpid()}


def _raise_boom() -> None:
    """Fail with an ordinary exception."""
    raise ValueError("boom")


def _sleep(seconds: float) -> None:
    """Outlive any reasonable timeout."""
    time.sleep(seconds)


def _kill_self() -> None:
    """Die by a signal, without a chance to report."""
    os.kill(os.getpid(), signal.SIGKILL)


def _reserve_then_kill(mb: int) -> None:
    """Map (not touch) mb MiB of address space, linger so the parent samples it, then die by SIGKILL."""
    reserved = mmap.mmap(-1, mb * 1024 * 1024)
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
    reserved.close()


def _allocate_slowly_mb(n: int) -> int:
    """Allocate n MiB in 10 MiB steps over about two seconds, so the parent samples the growth."""
    blocks = []
    for _ in range(n // 10):
        blocks.append(np.ones(10 * 1024 * 1024, dtype=np.uint8))
        time.sleep(2.0 / (n // 10))
    return len(blocks) * 10


def _torch_allocate_mb(n: int) -> int:
    """Allocate n MiB as a torch tensor (torch is preloaded in the child by threads=)."""
    import torch

    return int(torch.ones(n * 1024 * 1024, dtype=torch.uint8).numel() // (1024 * 1024))


def _torch_threads() -> int:
    """How many intra-op threads torch uses in the child."""
    import torch

    return torch.get_num_threads()


def test_allocation_within_budget_reports_value_and_childs_own_peak():
    # Raise the parent's own peak first: the child's peak must not inherit it (ru_maxrss would, across exec)
    parent_block = np.ones(400 * 1024 * 1024, dtype=np.uint8)
    del parent_block
    assert peak_rss_mb() >= 400

    res = run_with_memory_budget(_allocate_mb, 200, budget_mb=400, timeout_s=60)
    assert isinstance(res, BudgetResult)
    assert res.ok, res.error
    assert res.value == 200
    assert res.error is None and not res.exceeded_budget
    assert 200 <= res.peak_rss_mb < 200 + 150  # interpreter + numpy is well under 150 MiB
    assert 0 < res.baseline_rss_mb < 150
    assert res.seconds >= 0


def test_args_and_kwargs_reach_the_child():
    res = run_with_memory_budget(_return_value, 2, plus=3, budget_mb=100, timeout_s=60)
    assert res.ok, res.error
    assert res.value["sum"] == 5
    assert res.value["pid"] != os.getpid()


def test_over_budget_fails_cleanly_and_the_next_call_works():
    # one fast allocation: over before the parent samples, caught by the child's own high-water mark
    res = run_with_memory_budget(_allocate_mb, 200, budget_mb=100, timeout_s=60)
    assert not res.ok
    assert res.exceeded_budget
    assert res.value is None
    assert "memory budget of 100 MB exceeded" in res.error and "resident set reached" in res.error
    assert res.peak_rss_mb >= res.baseline_rss_mb + 100

    again = run_with_memory_budget(_allocate_mb, 50, budget_mb=100, timeout_s=60)
    assert again.ok and again.value == 50


def test_slow_growth_is_stopped_by_the_parent_near_the_budget():
    t0 = time.perf_counter()
    res = run_with_memory_budget(_allocate_slowly_mb, 400, budget_mb=100, timeout_s=60)
    assert not res.ok and res.exceeded_budget
    assert "the child was stopped" in res.error
    # stopped within a sample or two of passing the budget, long before the 400 MiB (and the 2 s) were reached
    assert res.peak_rss_mb < res.baseline_rss_mb + 100 + 60
    assert time.perf_counter() - t0 < 30


def test_address_space_backstop_fails_one_huge_allocation_inside_the_child():
    res = run_with_memory_budget(_allocate_mb, 200, budget_mb=100, address_space_mb=150, timeout_s=60)
    assert not res.ok and res.exceeded_budget
    assert "MemoryError" in res.error
    assert res.peak_rss_mb < res.baseline_rss_mb + 150  # the allocation never became resident
    with pytest.raises(ValueError, match="address_space_mb"):
        run_with_memory_budget(_allocate_mb, 1, budget_mb=100, address_space_mb=50)

    again = run_with_memory_budget(_allocate_mb, 50, budget_mb=100, timeout_s=60)
    assert again.ok and again.value == 50


def test_exception_in_child_is_reported():
    res = run_with_memory_budget(_raise_boom, budget_mb=100, timeout_s=60)
    assert not res.ok and not res.exceeded_budget
    assert "ValueError" in res.error and "boom" in res.error
    assert res.peak_rss_mb > 0


def test_timeout_kills_the_child():
    t0 = time.perf_counter()
    res = run_with_memory_budget(_sleep, 30, budget_mb=100, timeout_s=2)
    assert time.perf_counter() - t0 < 10
    assert not res.ok and not res.exceeded_budget
    assert "timed out after 2 s" in res.error


def test_child_killed_by_signal():
    res = run_with_memory_budget(_kill_self, budget_mb=100, timeout_s=60)
    assert not res.ok and not res.exceeded_budget
    assert "signal 9" in res.error and "SIGKILL" in res.error


def test_child_killed_near_the_backstop_counts_as_over_budget():
    res = run_with_memory_budget(_reserve_then_kill, 190, budget_mb=100, address_space_mb=200, timeout_s=60)
    assert not res.ok
    assert res.exceeded_budget
    assert "memory budget of 100 MB exceeded" in res.error and "SIGKILL" in res.error


def test_torch_tensor_over_budget_with_threads():
    # threads= imports torch before the call, so its ~500 MiB resident and GBs of address space are not charged
    res = run_with_memory_budget(_torch_allocate_mb, 300, budget_mb=100, timeout_s=120, threads=1)
    assert not res.ok and res.exceeded_budget, res.error
    assert "memory budget of 100 MB exceeded" in res.error


def test_lazy_torch_import_is_charged_unless_preloaded():
    # _torch_allocate_mb imports torch in its body: without preload its resident memory counts against the budget
    res = run_with_memory_budget(_torch_allocate_mb, 10, budget_mb=100, timeout_s=120)
    assert not res.ok and res.exceeded_budget
    assert "preload" in res.error

    res = run_with_memory_budget(_torch_allocate_mb, 300, budget_mb=400, timeout_s=120, preload=["torch"])
    assert res.ok, res.error
    assert res.value == 300
    assert res.peak_rss_mb >= res.baseline_rss_mb + 300 - 1


def test_threads_are_set_in_the_child():
    res = run_with_memory_budget(_torch_threads, budget_mb=100, timeout_s=120, threads=1)
    assert res.ok, res.error
    assert res.value == 1


def test_lambda_and_local_function_are_rejected_before_spawning():
    with pytest.raises(TypeError, match="module-level function"):
        run_with_memory_budget(lambda: 1, budget_mb=100)

    def local() -> int:
        return 1

    with pytest.raises(TypeError, match="module-level function"):
        run_with_memory_budget(local, budget_mb=100)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        run_with_memory_budget(_allocate_mb, 1, budget_mb=0)
    with pytest.raises(ValueError):
        run_with_memory_budget(_allocate_mb, 1, budget_mb=100, timeout_s=0)
    with pytest.raises(ValueError):
        run_with_memory_budget(_allocate_mb, 1, budget_mb=100, threads=0)


def test_memory_helpers():
    assert peak_rss_mb() > 0
    assert available_memory_mb() > 0
    budget = default_budget_mb()
    assert 0 < budget <= 8192
    assert default_budget_mb(0.01) < budget or budget == 8192
    with pytest.raises(ValueError):
        default_budget_mb(0)
