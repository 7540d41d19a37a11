import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.evaluation.evaluate import evaluate
from workbench.zoo import ArchConfig, DataConfig, TrainConfig, Zoo, ZooConfig, ZooMismatchError, collect

DATA = DataConfig(name="mnist5k", n_train=1000, n_test=300)
MLP = ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10)


def _cfg(protocol, n=12, **kw):
    select = ("fc2.*", "fc3.*") if protocol == "dense_subset" else ("*",)
    base = dict(name=f"t_{protocol}", protocol=protocol, data=DATA, arch=MLP, train=TrainConfig(epochs=3),
                n_members=n, select=select, chunk_size=4)
    base.update(kw)
    return ZooConfig(**base)


@pytest.mark.parametrize("protocol", ["dense_subset", "dense_full", "seeds"])
def test_collect_layout_and_members(tmp_path, protocol):
    zoo = collect(_cfg(protocol), tmp_path / "z", progress=False)
    assert len(zoo) == 12 and zoo.complete
    for f in ("config.json", "spec.json", "manifest.csv", "base.safetensors"):
        assert (tmp_path / "z" / f).exists()
    m = zoo.manifest
    assert list(m["member_id"]) == list(range(12))
    assert {"seed", "step", "train_acc", "test_acc", "protocol", "shard"} <= set(m.columns)
    assert (m["test_acc"] > 50).all()
    # a stored member, loaded into a model, reproduces its stored accuracy
    r = evaluate(zoo.model(5), zoo.data())
    assert r.accuracy[0] == pytest.approx(m["test_acc"][5], abs=1e-9)
    vec = zoo.vectors()
    assert vec.shape == (12, zoo.spec.numel) and torch.isfinite(vec).all()
    if protocol == "seeds":
        assert len(set(m["seed"])) == 12
    else:
        assert list(m["step"]) == list(range(1, 13))
        assert len(np.unique(vec.numpy(), axis=0)) == 12


def test_dense_subset_keeps_the_rest_of_the_base(tmp_path):
    zoo = collect(_cfg("dense_subset"), tmp_path / "z", progress=False)
    base = zoo.base_state()
    for i in (0, 11):
        sd = zoo.model(i).state_dict()
        assert torch.equal(sd["fc1.weight"], base["fc1.weight"])
        assert not torch.equal(sd["fc3.weight"], base["fc3.weight"])


def test_rerun_resumes_without_duplicates_and_grows(tmp_path):
    cfg = _cfg("seeds", n=8)
    collect(cfg, tmp_path / "z", progress=False)
    before = pd.read_csv(tmp_path / "z" / "manifest.csv")
    again = collect(cfg, tmp_path / "z", progress=False)
    pd.testing.assert_frame_equal(before, again.manifest)


def test_directory_with_other_zoo_is_refused(tmp_path):
    collect(_cfg("seeds", n=4), tmp_path / "z", progress=False)
    with pytest.raises(ZooMismatchError, match="different config"):
        collect(_cfg("seeds", n=4, seed=9), tmp_path / "z", progress=False)


def test_corrupt_shard_is_a_clear_error(tmp_path):
    zoo = collect(_cfg("seeds", n=4), tmp_path / "z", progress=False)
    shard = tmp_path / "z" / "shards" / zoo.manifest["shard"][0]
    from workbench.core.io import load_tensors

    shard.write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match="corrupt"):
        load_tensors(shard)


def test_missing_zoo_directory_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="collect it first"):
        Zoo(tmp_path / "nothing")


def _run_collect(cfg_path, root, env=None):
    return subprocess.Popen([sys.executable, "-m", "workbench", "zoo", "collect", "--config", str(cfg_path),
                             "--root", str(root), "--quiet"], env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_crash_between_shard_and_trajectory_state_replays(tmp_path):
    cfg = _cfg("dense_subset", n=12)
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg.to_dict()))
    proc = _run_collect(p, tmp_path / "crashed", env={"WORKBENCH_FAULT": "after_shard:2"})
    assert proc.wait(timeout=300) == 17
    rows = pd.read_csv(tmp_path / "crashed" / "manifest.csv")
    assert list(rows["member_id"]) == list(range(8))  # two shards committed, then the crash
    resumed = collect(cfg, tmp_path / "crashed", progress=False)
    clean = collect(cfg, tmp_path / "clean", progress=False)
    assert list(resumed.manifest["member_id"]) == list(range(12))
    assert torch.allclose(resumed.vectors(), clean.vectors(), atol=1e-6)
    pd.testing.assert_series_equal(resumed.manifest["test_acc"], clean.manifest["test_acc"])


def test_sigkill_mid_collection_then_resume_matches_clean_run(tmp_path):
    cfg = _cfg("seeds", n=24, train=TrainConfig(epochs=6), chunk_size=4)
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg.to_dict()))
    root = tmp_path / "killed"
    proc = _run_collect(p, root)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((root / "shards").glob("shard-*"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(pd.read_csv(root / "manifest.csv"))
    assert 0 < n_before < 24, "the kill should land in the middle of the collection"
    resumed = collect(cfg, root, progress=False)
    clean = collect(cfg, tmp_path / "clean", progress=False)
    assert list(resumed.manifest["member_id"]) == list(range(24))
    assert resumed.manifest["member_id"].is_unique
    assert torch.allclose(resumed.vectors(), clean.vectors(), atol=1e-5)
    assert np.allclose(resumed.manifest["test_acc"], clean.manifest["test_acc"], atol=0.5)
    assert not list(root.rglob("*.tmp"))
