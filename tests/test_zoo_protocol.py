"""The zoo interface (workbench.zoo.protocol): every zoo family implements it the same way."""

import golden
import numpy as np
import pytest
import torch

from workbench.app.robustness.fixtures import DENSE
from workbench.core.params import ParamSpec
from workbench.data import TaskData
from workbench.systems.cond_pdiff.style.network import StyleNetConfig
from workbench.systems.cond_pdiff.style.zoo import StyleZooConfig, collect_style_zoo
from workbench.zoo import collect
from workbench.zoo.protocol import Condition, ParameterZoo, check_zoo, condition_names

TINY_STYLES = StyleZooConfig(name="tiny", styles=("sepia", "gram:stripes"), base=StyleNetConfig(channels=8, depth=3),
                             n_digits=20, n_eval=2, base_steps=10, steps=6, keep_last=3, lr=0.01)


def _check_interface(zoo, classification: bool = True) -> None:
    """What every zoo promises: conditions, member vectors per condition, the model they load into, data and
    stored accuracies per condition, and a clear error for a condition it does not have."""
    assert isinstance(zoo, ParameterZoo)
    check_zoo(zoo)
    conds = zoo.conditions
    assert conds and all(isinstance(c, Condition) for c in conds)
    seen = [c.name for c in conds if c.seen]
    assert seen and condition_names(zoo) == seen
    parts = [zoo.vectors(name) for name in seen]
    assert all(v.ndim == 2 and v.shape[1] == zoo.spec.numel and len(v) > 0 for v in parts)
    assert torch.equal(zoo.vectors(), torch.cat(parts))  # None: the seen conditions, condition after condition
    assert torch.equal(zoo.vectors(seen), torch.cat(parts))
    model = zoo.model()
    zoo.spec.load_into(model, parts[0][0])
    assert torch.equal(zoo.spec.flatten(model.state_dict()), parts[0][0])
    with pytest.raises(ValueError, match="unknown conditions.*this zoo has"):
        zoo.vectors("no-such-condition")
    if classification:
        for name, v in zip(seen, parts):
            acc = zoo.accuracies(name)
            assert isinstance(acc, np.ndarray) and len(acc) == len(v) and ((acc >= 0) & (acc <= 100)).all()
            d = zoo.data(name)
            assert isinstance(d, TaskData) and len(d.x_test) == len(d.y_test) > 0


def test_condition_round_trip_text_and_errors():
    c = Condition(name="even", kind="task", description="Is it even?", examples=["4 → yes", "7 → no"], code=[1, 0])
    assert c.examples == ("4 → yes", "7 → no") and c.code == (1.0, 0.0)
    assert c.text() == "Is it even? Examples: 4 → yes 7 → no" and c.text(with_examples=False) == "Is it even?"
    assert Condition.from_dict(c.to_dict()) == c
    # a task dict of the older format (with its classes) still reads as a condition
    old = {"name": "odd", "description": "Is it odd?", "examples": ["7", "4"], "classes": [[0], [1]]}
    assert Condition.from_dict(old) == Condition(name="odd", kind="task", description="Is it odd?", examples=("7", "4"))
    with pytest.raises(ValueError, match="condition kind 'colour'"):
        Condition(name="x", kind="colour")
    with pytest.raises(TypeError, match="name is a str"):
        Condition(name=3)


def test_check_zoo_names_what_is_missing():
    class HalfZoo:
        spec = None

        def vectors(self, condition=None):
            return torch.zeros(2, 3)

    with pytest.raises(TypeError, match=r"missing \['conditions', 'model', 'data', 'accuracies'\]"):
        check_zoo(HalfZoo())
    assert not isinstance(HalfZoo(), ParameterZoo)


def test_a_zoo_of_your_own_is_a_parameter_zoo():
    net = torch.nn.Linear(3, 2)
    spec = ParamSpec.select(net, ["weight"])

    class MyZoo:
        conditions = [Condition(name="mine")]

        def __init__(self):
            self.spec = spec
            self._v = torch.randn(5, spec.numel, generator=torch.Generator().manual_seed(0))

        def model(self):
            return net

        def vectors(self, condition=None):
            condition_names(self, condition)
            return self._v

        def data(self, condition=None):
            x = torch.randn(8, 3)
            return TaskData(x, torch.zeros(8, dtype=torch.long), x, torch.zeros(8, dtype=torch.long), None)

        def accuracies(self, condition=None, split="test"):
            return np.full(5, 50.0)

    _check_interface(MyZoo())


def test_dense_zoo_implements_the_interface(tmp_path):
    zoo = collect(DENSE, tmp_path / "dense", progress=False)
    _check_interface(zoo)
    (c,) = zoo.conditions
    assert c.kind == "none" and c.name == zoo.config.name
    assert len(zoo.vectors()) == len(zoo) and np.array_equal(zoo.accuracies(split="train"),
                                                             zoo.manifest["train_acc"].to_numpy())
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        zoo.accuracies(split="val")


def test_lora_zoo_implements_the_interface(tmp_path):
    zoo = golden.lora_zoo(tmp_path / "lora", seed=0)
    _check_interface(zoo)
    conds = {c.name: c for c in zoo.conditions}
    task = zoo.config.task_table()["even"]
    assert conds["even"].kind == "task" and conds["even"].text() == task.text()
    assert [n for n, c in conds.items() if not c.seen] == list(zoo.config.unseen)
    assert len(zoo.vectors("odd")) > 0  # held-out tasks have originals too (never trained on by a generator)
    with pytest.raises(ValueError, match="test accuracies only"):
        zoo.accuracies("even", split="train")
    with pytest.raises(ValueError, match="data is per task"):
        zoo.data()


def test_style_zoo_implements_the_interface(tmp_path):
    zoo = collect_style_zoo(TINY_STYLES, tmp_path / "styles", progress=False)
    _check_interface(zoo, classification=False)
    for c in zoo.conditions:
        assert c.kind == "style" and torch.equal(c.image, zoo.reference(c.name))
    assert len(zoo.losses("sepia")) == len(zoo.vectors("sepia"))
    with pytest.raises(ValueError, match="no classification data"):
        zoo.data("sepia")
    with pytest.raises(ValueError, match="stores no accuracies"):
        zoo.accuracies("sepia")
