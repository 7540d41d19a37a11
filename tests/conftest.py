import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# OMP_NUM_THREADS, when set, decides (the suite must pass with 1 and with 2 threads); else at most 2, as in CI
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def mnist_small():
    from workbench.data import load_dataset

    return load_dataset("mnist5k", seed=0, n_train=1000, n_test=300)
