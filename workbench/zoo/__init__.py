"""Model zoos: architectures, training, collection protocols and storage."""

from workbench.data import batch_schedule
from workbench.nn.architectures import ArchConfig, build_model, count_params
from workbench.zoo.collection import collect, collect_all
from workbench.zoo.config import PROTOCOLS, DataConfig, ZooConfig
from workbench.zoo.storage import Zoo, ZooMismatchError, ZooStore
from workbench.zoo.tensor_zoo import TensorZoo
from workbench.zoo.training import TrainConfig, init_members, train_loop, train_vectorized

__all__ = ["ArchConfig", "build_model", "count_params", "PROTOCOLS", "DataConfig", "ZooConfig", "collect", "collect_all", "Zoo", "TensorZoo",
           "ZooMismatchError", "ZooStore", "TrainConfig", "batch_schedule", "init_members", "train_loop",
           "train_vectorized"]
