"""The bad-input matrix (workbench.app.robustness): every case must end in a clear error or a correct result, and
nothing it guards may change on disk. ``python -m workbench bench robustness`` runs the same matrix."""

import pytest

from workbench.app.robustness import all_cases, classify
from workbench.app.robustness.fixtures import Fixtures

CASES = all_cases()


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return Fixtures(tmp_path_factory.mktemp("robustness"))


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 120
    assert len({c.group for c in CASES}) >= 6


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, fx):
    res = classify(case, fx)
    assert res.outcome in ("clear_error", "handled"), f"{res.outcome}: {res.detail}"
