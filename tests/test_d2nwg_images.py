"""D2NWG meta-dataset images: the sources (offline digits, printed digits, torchvision files) and the domains."""

import math
import struct
import time

import numpy as np
import pytest
import torch

from workbench.data import DatasetMissingError
from workbench.systems.d2nwg.domains import DOMAINS, apply_domain, domain_grid
from workbench.systems.d2nwg.sources import OFFLINE_SOURCES, SOURCES, available_sources, load_source

RANDOM_DOMAINS = [d for d in DOMAINS if d not in ("identity", "inversion")]


@pytest.fixture(scope="module")
def mnist():
    return load_source("mnist5k", n_per_class=100, seed=0)


@pytest.fixture(scope="module")
def printed_timed():
    t = time.perf_counter()
    s = load_source("printed", n_per_class=100, seed=0)
    return s, time.perf_counter() - t


@pytest.fixture(scope="module")
def printed(printed_timed):
    return printed_timed[0]


@pytest.fixture(scope="module")
def digits_batch(mnist):
    return mnist.x[:16]


def _class_means(s) -> torch.Tensor:
    return torch.stack([s.x[s.y == k].mean(0) for k in range(10)])


# -- sources --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", OFFLINE_SOURCES)
def test_offline_source_shape_range_balance_and_order(name):
    s = load_source(name, n_per_class=30, seed=0)
    assert s.name == name and s.x.shape == (300, 1, 28, 28) and s.x.dtype == torch.float32
    assert s.y.shape == (300,) and s.y.dtype == torch.long
    assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0 and float(s.x.max()) > 0.9
    assert s.class_counts() == {k: 30 for k in range(10)}
    assert s.class_names == tuple(str(i) for i in range(10)) and s.description
    assert (s.y[1:] < s.y[:-1]).any()  # shuffled, not sorted by class


def test_digits_gives_what_each_class_has():
    from sklearn.datasets import load_digits

    available = np.bincount(load_digits().target, minlength=10)
    s = load_source("digits", n_per_class=200, seed=0)
    assert s.class_counts() == {k: int(available[k]) for k in range(10)} and len(s.y) == 1797
    s = load_source("digits", n_per_class=180, seed=0)
    assert s.class_counts() == {k: min(180, int(available[k])) for k in range(10)}
    assert min(s.class_counts().values()) < 180 < 1 + max(s.class_counts().values())
    # the 8×8 digit sits in the centre 20×20 like an MNIST digit: the 4-pixel border is empty
    assert float(s.x[..., :4, :].max()) == 0.0 and float(s.x[..., :, -4:].max()) == 0.0


@pytest.mark.parametrize("name", OFFLINE_SOURCES)
def test_sources_are_deterministic_per_seed(name):
    a, b = load_source(name, n_per_class=10, seed=3), load_source(name, n_per_class=10, seed=3)
    c = load_source(name, n_per_class=10, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    # another seed picks other images, not only another order
    def images(s):
        return {tuple(v) for v in s.x.flatten(1).mul(255).round().int().tolist()}

    assert images(a) != images(c)


def test_printed_digits_differ_from_mnist_but_read_as_digits(mnist, printed):
    other_mnist = load_source("mnist5k", n_per_class=100, seed=1)
    gap = float((_class_means(mnist) - _class_means(printed)).abs().mean())
    within = float((_class_means(mnist) - _class_means(other_mnist)).abs().mean())
    assert gap > 3 * within  # measured: 0.074 vs 0.015
    # every class renders: each image has ink, and the ten class means are different shapes
    assert printed.class_counts() == {k: 100 for k in range(10)}
    assert (printed.x.flatten(1).amax(1) > 0.5).all()
    ink = (printed.x > 0.5).flatten(1).float().mean(1)
    assert float(ink.min()) > 0.03 and float(ink.max()) < 0.45
    means = _class_means(printed).flatten(1)
    assert float(torch.pdist(means).min()) > 0.5
    # plausible digits: MNIST's class means already classify them well above chance (measured ~0.30)
    centroids = _class_means(load_source("mnist5k", n_per_class=500, seed=0)).flatten(1)
    acc = float((torch.cdist(printed.x.flatten(1), centroids).argmin(1) == printed.y).float().mean())
    assert acc > 0.2


def test_printed_is_fast(printed_timed):
    s, seconds = printed_timed
    assert len(s.y) == 1000 and seconds < 2.5  # ~0.4 s measured on one core (0.8 s for 200 per class)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_n_per_class(bad):
    with pytest.raises(ValueError, match="n_per_class"):
        load_source("mnist5k", n_per_class=bad)


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown source 'svhn'.*printed"):
        load_source("svhn", n_per_class=5)


@pytest.mark.parametrize("name,folder", [("fashion_mnist", "FashionMNIST"), ("cifar10", "cifar-10-batches-py")])
def test_missing_torchvision_source(tmp_path, name, folder):
    with pytest.raises(DatasetMissingError) as e:
        load_source(name, n_per_class=5, root=tmp_path)
    msg = str(e.value)
    assert folder in msg and str(tmp_path) in msg
    assert all(s in msg for s in OFFLINE_SOURCES)
    assert available_sources(root=tmp_path) == {n: n in OFFLINE_SOURCES for n in SOURCES}


def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 | arr.ndim))
        f.write(struct.pack(">" + "I" * arr.ndim, *arr.shape))
        f.write(arr.tobytes())


def test_fashion_mnist_from_local_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (40, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(40) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(20) % 10)
    assert available_sources(root=tmp_path)["fashion_mnist"]
    s = load_source("fashion_mnist", n_per_class=10, seed=0, root=tmp_path)
    assert s.x.shape == (60, 1, 28, 28) and s.x.dtype == torch.float32  # 6 per class: train and test pooled
    assert s.class_counts() == {k: 6 for k in range(10)} and s.class_names[0] == "t-shirt"
    assert 0.0 <= float(s.x.min()) and float(s.x.max()) <= 1.0 and str(tmp_path) in s.description


def test_colour_source_is_resized_to_28(monkeypatch):
    import workbench.systems.d2nwg.sources as sources

    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (50, 3, 32, 32)).astype(np.uint8), np.arange(50) % 10
    monkeypatch.setattr(sources, "_torchvision_pool", lambda name, root: pool)  # CIFAR files need their checksums
    s = load_source("cifar10", n_per_class=3, seed=0)
    assert s.x.shape == (30, 3, 28, 28) and s.x.dtype == torch.float32 and s.class_names[0] == "airplane"
    assert 0.0 <= float(s.x.min()) and float(s.x.max()) <= 1.0 and float(s.x.std()) > 0.05


def test_offline_sources_are_available():
    avail = available_sources()
    assert set(avail) == set(SOURCES) and all(avail[n] for n in OFFLINE_SOURCES)


# -- domains --------------------------------------------------------------------------------------------------------
def test_domain_names_in_order():
    assert list(DOMAINS)[:8] == ["identity", "rotation", "inversion", "tint", "blur", "noise", "scale", "elastic"]
    assert all(isinstance(v, str) and v for v in DOMAINS.values())


@pytest.mark.parametrize("domain", list(DOMAINS))
@pytest.mark.parametrize("channels", [1, 3])
def test_domain_shape_range_and_determinism(domain, channels):
    x = torch.rand(5, channels, 28, 28, generator=torch.Generator().manual_seed(channels))
    y = apply_domain(x, domain, seed=1)
    assert y.shape == (5, 3, 28, 28) and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(y, apply_domain(x, domain, seed=1))
    if domain in RANDOM_DOMAINS:
        assert not torch.equal(y, apply_domain(x, domain, seed=2))


def test_non_square_and_empty_batches():
    x = torch.rand(2, 1, 20, 32)
    for d in DOMAINS:
        assert apply_domain(x, d).shape == (2, 3, 20, 32)
        assert apply_domain(x[:0], d).shape == (0, 3, 20, 32)


def test_identity_and_inversion_are_exact(digits_batch):
    rgb = digits_batch.repeat(1, 3, 1, 1)
    assert torch.equal(apply_domain(digits_batch, "identity"), rgb)
    assert torch.allclose(apply_domain(digits_batch, "inversion"), 1 - rgb)


@pytest.mark.parametrize("domain", [d for d in DOMAINS if d != "identity"])
def test_every_domain_changes_the_images(digits_batch, domain):
    y = apply_domain(digits_batch, domain)
    diff = (y - digits_batch.repeat(1, 3, 1, 1)).abs().mean(dim=(1, 2, 3))
    assert float(diff.min()) > 0.02, f"{domain}: per-image mean |change| {diff.tolist()}"  # weakest ~0.07 on average


def _orientation(img: torch.Tensor) -> float:
    """Angle (degrees, counter-clockwise on screen) of the principal axis of a grey image's ink."""
    h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    m = img / img.sum()
    cx, cy = (m * xs).sum(), (m * -ys).sum()  # y up, as on screen
    sxx, syy = (m * (xs - cx) ** 2).sum(), (m * (-ys - cy) ** 2).sum()
    sxy = (m * (xs - cx) * (-ys - cy)).sum()
    return math.degrees(0.5 * math.atan2(2 * float(sxy), float(sxx - syy)))


def test_rotation_turns_a_horizontal_bar_counter_clockwise():
    bar = torch.zeros(6, 1, 28, 28)
    bar[:, :, 13:15, 4:24] = 1.0
    assert abs(_orientation(bar[0, 0])) < 1e-3
    y = apply_domain(bar, "rotation", seed=0)
    angles = [_orientation(img[0]) for img in y]
    assert all(33 < a < 57 for a in angles), angles
    assert len({round(a, 2) for a in angles}) > 1  # per-image strength


def test_scale_shrinks_and_tint_colours(digits_batch):
    rgb = digits_batch.repeat(1, 3, 1, 1)
    small = apply_domain(digits_batch, "scale")
    ratio = small.sum(dim=(1, 2, 3)) / rgb.sum(dim=(1, 2, 3))
    assert ((ratio > 0.2) & (ratio < 0.5)).all()  # area shrinks by s² with s in [0.5, 0.65]
    # the content of the 20×20 box now fits in the middle 18×18 or less: a 4-pixel margin is empty all round
    assert float(small[..., :4, :].max() + small[..., -4:, :].max()) < 1e-6
    assert float(small[..., :4].max() + small[..., -4:].max()) < 1e-6
    tinted = apply_domain(digits_batch, "tint")
    bg = tinted.permute(1, 0, 2, 3)[:, digits_batch[:, 0] == 0]  # (3, background pixels)
    assert float(bg[2].mean()) > float(bg[0].mean()) + 0.2  # dark-blue background
    ink = tinted.permute(1, 0, 2, 3)[:, (digits_batch[:, 0] > 0.99)]
    assert float(ink[0].mean()) > 0.9 and float(ink[2].mean()) < 0.2  # orange strokes


def test_blur_smooths_and_noise_adds_noise(digits_batch):
    rgb = digits_batch.repeat(1, 3, 1, 1)
    def tv(z):  # total variation along the rows: large for sharp edges
        return (z[..., 1:, :] - z[..., :-1, :]).abs().mean()

    assert tv(apply_domain(digits_batch, "blur")) < 0.6 * tv(rgb)
    residual = apply_domain(digits_batch, "noise") - rgb
    mid = (rgb > 0.3) & (rgb < 0.7)  # away from the clipping bounds the noise is unclipped-ish
    assert 0.1 < float(residual[mid].std()) < 0.35


def test_elastic_moves_the_ink_but_keeps_it(digits_batch):
    rgb = digits_batch.repeat(1, 3, 1, 1)
    y = apply_domain(digits_batch, "elastic")
    assert float((y - rgb).abs().mean()) > 0.05
    assert float((y.sum() / rgb.sum() - 1).abs()) < 0.2  # a displacement, not an erasure


@pytest.mark.parametrize("bad,match", [
    (torch.rand(28, 28), "shape"),
    (torch.rand(2, 2, 28, 28), "shape"),
    (torch.full((1, 1, 4, 4), float("nan")), "NaN"),
    (torch.randn(2, 1, 8, 8) * 3, r"\[0, 1\]"),
    (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), "dtype"),
])
def test_bad_images_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        apply_domain(bad, "blur")


def test_unknown_domain_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown domain 'sepia'.*elastic"):
        apply_domain(torch.rand(1, 1, 8, 8), "sepia")


def test_domain_grid(digits_batch):
    x = digits_batch[:4]
    names = ["identity", "rotation", "tint"]
    grid = domain_grid(x, names, seed=5)
    assert grid.shape == (3, 4, 3, 28, 28)
    for i, d in enumerate(names):
        assert torch.equal(grid[i], apply_domain(x, d, seed=5))
    with pytest.raises(ValueError, match="sequence"):
        domain_grid(x, "rotation")
    with pytest.raises(ValueError, match="empty"):
        domain_grid(x, [])
