"""Atomic writes publish files with the permissions ``open()`` would give them (mkstemp alone makes them 0600)."""

import os
import stat

import pandas as pd
import torch

from workbench.core.io import atomic_write_csv, atomic_write_text, save_tensors


def test_atomic_writes_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_csv(tmp_path / "b.csv", pd.DataFrame({"a": [1]}))
        save_tensors(tmp_path / "c.safetensors", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    want = stat.S_IMODE(plain.stat().st_mode)
    assert want == 0o644
    for name in ("a.txt", "b.csv", "c.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
    # nothing left behind by the temporary files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.csv", "c.safetensors", "plain.txt"]
