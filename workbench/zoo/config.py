"""Frozen, JSON-serialisable configuration of a zoo collection."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from workbench.core.config import JSONConfig
from workbench.data import DatasetInfo, TaskData, available_datasets, load_dataset, unknown_dataset_message
from workbench.nn.architectures import ArchConfig
from workbench.zoo.training import TrainConfig

__all__ = ["PROTOCOLS", "DataConfig", "ZooConfig"]

PROTOCOLS = ("dense_subset", "dense_full", "seeds")


@dataclass(frozen=True)
class DataConfig(JSONConfig, name="data config"):
    """Which dataset and split a zoo is trained on."""

    name: str = "mnist5k"
    seed: int = 0
    test_fraction: float = 0.2
    image_size: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    channels: int | None = None  # repeat grey images to this many channels (pretrained RGB backbones)

    def __post_init__(self) -> None:
        if self.name not in available_datasets():
            raise ValueError(unknown_dataset_message(self.name))
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be between 0 and 1, got {self.test_fraction!r}")
        for k in ("image_size", "n_train", "n_test", "channels"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ValueError(f"{k} must be >= 1 (or null), got {v!r}")

    def load(self) -> TaskData:
        """Load the dataset this config names."""
        data = load_dataset(self.name, seed=self.seed, test_fraction=self.test_fraction,
                            image_size=self.image_size, n_train=self.n_train, n_test=self.n_test)
        if self.channels is not None and data.x_train.ndim == 4 and data.x_train.shape[1] != self.channels:
            if data.x_train.shape[1] != 1:
                raise ValueError(f"cannot turn {data.x_train.shape[1]} channels into {self.channels}")
            rep = (1, self.channels, 1, 1)

            info = DatasetInfo(**{**asdict(data.info), "input_shape": (self.channels, *data.info.input_shape[1:])})
            data = TaskData(data.x_train.repeat(rep), data.y_train, data.x_test.repeat(rep), data.y_test, info)
        return data


# ``data`` and ``train`` may be left out of a zoo config (their defaults); the rest of a zoo must be stated
@dataclass(frozen=True)
class ZooConfig(JSONConfig, name="zoo config", required=("name", "protocol", "arch", "n_members")):
    """A zoo: which members to collect, how, and on what.

    Protocols: ``dense_subset`` (p-diff: train a base model, then train only ``select`` and keep a checkpoint
    every ``save_every`` steps), ``dense_full`` (the official p-diff code's "full": fine-tune every parameter
    of the trained base and keep checkpoints), ``seeds`` (member ``i`` trained from its own init seed ``seed + i``).
    """

    name: str
    protocol: str
    data: DataConfig
    arch: ArchConfig
    train: TrainConfig
    n_members: int
    select: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    seed: int = 0
    checkpoint_lr: float = 0.01
    checkpoint_momentum: float = 0.9
    save_every: int = 1
    chunk_size: int = 50
    vectorized: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "select", tuple(self.select))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose one of {PROTOCOLS}")
        for k in ("n_members", "save_every", "chunk_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)!r}")

    def with_(self, **changes: Any) -> ZooConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)
