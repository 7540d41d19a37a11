import json
import subprocess
import sys

import nbformat
import pytest

from workbench.report import ReportError, run_report


def test_bench_zoo_prints_one_json_object_last():
    r = subprocess.run([sys.executable, "-m", "workbench", "bench", "zoo", "--preset", "ci"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("preset", "members", "loop_members_per_s", "vectorized_members_per_s", "speedup",
                "vectorized_gflops", "matmul_peak_gflops", "fraction_of_peak"):
        assert key in out
    assert out["preset"] == "ci" and out["max_abs_acc_diff_loop_vs_vectorized"] <= 1.0
    assert 0 < out["fraction_of_peak"] < 1.5


def test_unknown_benchmark_and_preset_are_clear():
    r = subprocess.run([sys.executable, "-m", "workbench", "bench", "nope", "--preset", "ci"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "available" in r.stderr
    from workbench.presets import load_preset

    with pytest.raises(ValueError, match="bundled presets"):
        load_preset("huge")


def test_failing_notebook_stops_report_naming_notebook_and_cell(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('preset = "ci"  # preset', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(nbdir / "01_fail.ipynb"))
    nbformat.write(nb, str(nbdir / "02_never.ipynb"))
    with pytest.raises(ReportError, match=r"01_fail\.ipynb failed in cell \d+ \(ValueError: broken on purpose\)"):
        run_report("ci", out_dir=tmp_path / "out", run_dir=tmp_path / "run", notebooks_dir=nbdir, html=False)
    assert not (tmp_path / "out" / "02_never.ipynb").exists()
