"""Frozen, JSON-serialisable configuration of a zoo collection."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..data import TaskData, load_dataset
from .architectures import ArchConfig
from .training import TrainConfig

__all__ = ["DataConfig", "ZooConfig", "PROTOCOLS"]

PROTOCOLS = ("dense_subset", "dense_full", "seeds")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset and split a zoo is trained on."""

    name: str = "mnist5k"
    seed: int = 0
    test_fraction: float = 0.2
    image_size: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    channels: int | None = None  # repeat grey images to this many channels (pretrained RGB backbones)

    def load(self) -> TaskData:
        """Load the dataset this config names."""
        data = load_dataset(self.name, seed=self.seed, test_fraction=self.test_fraction,
                            image_size=self.image_size, n_train=self.n_train, n_test=self.n_test)
        if self.channels is not None and data.x_train.ndim == 4 and data.x_train.shape[1] != self.channels:
            if data.x_train.shape[1] != 1:
                raise ValueError(f"cannot turn {data.x_train.shape[1]} channels into {self.channels}")
            rep = (1, self.channels, 1, 1)
            from ..data import DatasetInfo

            info = DatasetInfo(**{**asdict(data.info), "input_shape": (self.channels, *data.info.input_shape[1:])})
            data = TaskData(data.x_train.repeat(rep), data.y_train, data.x_test.repeat(rep), data.y_test, info)
        return data


@dataclass(frozen=True)
class ZooConfig:
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
        if self.n_members < 1 or self.save_every < 1 or self.chunk_size < 1:
            raise ValueError("n_members, save_every and chunk_size must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view (nested configs as dicts)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["data"] = asdict(self.data)
        d["arch"] = self.arch.to_dict()
        d["train"] = self.train.to_dict()
        d["select"], d["exclude"] = list(self.select), list(self.exclude)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ZooConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo in a preset must not pass)."""
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown zoo config keys {sorted(unknown)}; valid keys: {sorted(known)}")
        d["data"] = DataConfig(**d.get("data", {}))
        d["train"] = TrainConfig(**d.get("train", {}))
        arch = dict(d["arch"])
        d["arch"] = arch
        return cls(**{**d, "arch": ArchConfig(**arch)})

    def with_(self, **changes: Any) -> "ZooConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)
