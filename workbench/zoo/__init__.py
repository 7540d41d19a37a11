"""Model zoos: architectures, training, collection protocols and storage."""

from .architectures import ArchConfig, build_model, count_params
from .config import PROTOCOLS, DataConfig, ZooConfig
from .protocols import collect, collect_all
from .storage import Zoo, ZooMismatchError, ZooStore
from .training import TrainConfig, batch_schedule, init_members, train_loop, train_vectorized

__all__ = ["ArchConfig", "build_model", "count_params", "PROTOCOLS", "DataConfig", "ZooConfig", "collect", "collect_all", "Zoo",
           "ZooMismatchError", "ZooStore", "TrainConfig", "batch_schedule", "init_members", "train_loop",
           "train_vectorized"]
