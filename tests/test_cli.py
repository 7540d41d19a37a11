import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from workbench.app.report import ReportError, run_report


def test_bench_zoo_prints_one_json_object_last():
    r = subprocess.run([sys.executable, "-m", "workbench", "bench", "zoo", "--preset", "ci"], capture_output=True,
                       text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("preset", "members", "loop_members_per_s", "vectorized_members_per_s", "speedup",
                "vectorized_gflops", "matmul_peak_gflops", "fraction_of_peak"):
        assert key in out
    assert out["preset"] == "ci" and out["max_abs_acc_diff_loop_vs_vectorized"] <= 1.0
    assert 0 < out["fraction_of_peak"] < 1.5


def test_unknown_benchmark_and_preset_are_clear():
    r = subprocess.run([sys.executable, "-m", "workbench", "bench", "nope", "--preset", "ci"], capture_output=True,
                       text=True, check=False)
    assert r.returncode != 0 and "available" in r.stderr
    from workbench.app.presets import load_preset

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


# -- bad arguments: one line on stderr, a non-zero exit, nothing written ---------------------------------------
def _main(argv, capsys):
    from workbench.app.cli import main

    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _preset_file(tmp_path, zoos, name="custom"):
    from workbench.app.presets import load_preset

    zoo = load_preset("ci").zoos["mlp_seeds"].to_dict()
    f = tmp_path / f"{name}.json"
    f.write_text(json.dumps({"name": name, "zoos": {k: zoo for k in zoos}}))
    return f


@pytest.mark.parametrize("argv, match", [
    (["bench", "nope"], r"unknown benchmark 'nope'; available: \[.*'zoo'"),
    (["bench", "zoo", "--preset", "nope"], r"unknown preset 'nope'; bundled presets"),
    (["zoo", "collect", "--preset", "ci", "--zoo", "nonexistent"], r"preset 'ci' has no zoo 'nonexistent'"),
    (["zoo", "collect", "--config", "/nonexistent/zoo.json", "--root", "z"], r"--config .* does not exist"),
    (["zoo", "collect", "--preset", "ci", "--run-dir", "", "--zoo", "mlp_seeds"], r"--run-dir is empty"),
    (["report", "--preset", "../../etc/passwd"], r"unknown preset"),
    (["report", "--seed", "x"], r"invalid int value"),
    (["bench", "zoo", "--preset", "ci", "--device", "gpu"], r"--device 'gpu' is not a torch device"),
    (["fit", "--preset", "ci", "--zoo", "nonexistent"], r"preset 'ci' has no zoo 'nonexistent'"),
    (["fit", "--preset", "ci", "--zoo", "mlp_dense", "--device", "tpu9"], r"--device 'tpu9'"),
])
def test_cli_errors_are_one_line_and_no_traceback(argv, match, capsys):
    code, _, err = _main(argv, capsys)
    assert code not in (0, None)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert re.search(match, lines[0]), lines[0]


@pytest.mark.parametrize("content, match", [
    ("{not json", r"is not valid JSON"),
    ({"name": "z", "protocol": "seeds", "n_members": 2}, r"missing required keys \['arch'\]"),
    ({"name": "z", "protocol": "seeds", "n_members": "six", "arch": {"name": "mlp3", "input_shape": [1, 28, 28],
                                                                      "num_classes": 10}},
     r"n_members = 'six' is not valid: expected an integer"),
])
def test_zoo_collect_config_errors_are_one_line_and_create_nothing(tmp_path, capsys, content, match):
    cfg = tmp_path / "zoo.json"
    cfg.write_text(content if isinstance(content, str) else json.dumps(content))
    code, _, err = _main(["zoo", "collect", "--config", str(cfg), "--root", str(tmp_path / "zoo")], capsys)
    assert code == 1 and re.search(match, err) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "zoo").exists()


def test_workbench_debug_shows_the_traceback(monkeypatch):
    from workbench.app.cli import main

    monkeypatch.setenv("WORKBENCH_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown benchmark"):
        main(["bench", "nope"])


def test_help_documents_workbench_debug(capsys):
    code, out, _ = _main(["--help"], capsys)
    assert code == 0 and "WORKBENCH_DEBUG=1" in out


@pytest.mark.parametrize("key, escape", [("../../y", "y"), ("/elsewhere/x", None), ("a/b", "run/zoos/a")])
def test_zoo_collect_refuses_a_preset_key_that_escapes(tmp_path, capsys, key, escape):
    f = _preset_file(tmp_path, ["ok", key])
    code, _, err = _main(["zoo", "collect", "--preset", str(f), "--run-dir", str(tmp_path / "run")], capsys)
    assert code == 1 and "is not a valid name" in err
    assert not (tmp_path / "run").exists() and (escape is None or not (tmp_path / escape).exists())


def test_report_refuses_before_creating_any_folder(tmp_path):
    out, run = tmp_path / "out", tmp_path / "run"
    with pytest.raises(ReportError, match=r"matches --only \['99'\]; the notebooks are"):
        run_report("ci", out_dir=out, run_dir=run, only=["99"], html=False)
    with pytest.raises(ValueError, match="unknown preset"):
        run_report("no-such-preset", out_dir=out, run_dir=run, html=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        run_report("ci", out_dir=tmp_path / "file", run_dir=run, only=["01"], html=False)
    assert not out.exists() and not run.exists()


def test_valid_zoo_collect_goes_where_it_did(tmp_path, capsys, monkeypatch):
    import workbench.app.cli

    calls = []

    class _Zoo:
        def describe(self):
            return {"members": 0}

    executors = []

    devices = []

    def fake_collect(cfg, root, progress=True, executor=None, device="cpu"):
        executors.append(executor)
        devices.append(device)
        calls.append((cfg, root))
        return _Zoo()

    monkeypatch.setattr(workbench.app.cli, "collect", fake_collect)
    assert _main(["zoo", "collect", "--preset", "ci", "--zoo", "mlp_seeds", "--run-dir", str(tmp_path / "r")],
                 capsys)[0] == 0
    assert calls[-1][1] == tmp_path / "r" / "zoos" / "mlp_seeds" and calls[-1][0].name == "mlp_seeds"
    assert executors[-1].name == "local"  # the default executor
    assert _main(["zoo", "collect", "--preset", "ci", "--zoo", "mlp_seeds", "--run-dir", str(tmp_path / "r"),
                  "--executor", "ray"], capsys)[0] == 0
    assert executors[-1].name == "ray"  # the stub never runs a unit, so no Ray starts
    assert devices[-1] == "cpu"
    assert _main(["zoo", "collect", "--preset", "ci", "--zoo", "mlp_seeds", "--run-dir", str(tmp_path / "r"),
                  "--device", "auto"], capsys)[0] == 0
    assert devices[-1] == "auto"
    code, _, err = _main(["zoo", "collect", "--preset", "ci", "--zoo", "mlp_seeds", "--run-dir",
                          str(tmp_path / "r2"), "--device", "cuda:7"], capsys)
    if not torch.cuda.is_available():
        assert code == 1 and "--device 'cuda:7' asks for CUDA" in err
    f = _preset_file(tmp_path, ["mine"], name="custom")
    assert _main(["zoo", "collect", "--preset", str(f)], capsys)[0] == 0
    assert calls[-1][1] == Path("runs") / "custom" / "zoos" / "mine"  # a preset path's folder is its name
    cfg = tmp_path / "zoo.json"
    cfg.write_text(json.dumps(calls[-1][0].to_dict()))
    assert _main(["zoo", "collect", "--config", str(cfg), "--root", str(tmp_path / "z")], capsys)[0] == 0
    assert calls[-1][1] == tmp_path / "z"


def test_bench_device_reaches_the_benchmarks_that_take_one(monkeypatch, capsys):
    import workbench.app.bench as bench

    seen = {}
    monkeypatch.setitem(bench.BENCHMARKS, "pdiff", lambda preset, device="cpu": seen.setdefault("pdiff", device))
    assert bench.takes_device("pdiff") and not bench.takes_device("zoo") and not bench.takes_device("robustness")
    assert _main(["bench", "pdiff", "--preset", "ci", "--device", "auto"], capsys)[0] == 0
    assert seen["pdiff"] == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        code, _, err = _main(["bench", "zoo", "--preset", "ci", "--device", "cuda"], capsys)
        assert code == 1 and "measures the CPU only" in err
