import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.core.normalise import load_normaliser, make_normaliser
from workbench.core.params import ParamSpec, ParamSpecError, last_modules
from workbench.zoo import ArchConfig, build_model

shapes = st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple), min_size=1, max_size=5)


@given(shapes=shapes, batch=st.integers(1, 4), seed=st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_flatten_unflatten_round_trip(shapes, batch, seed):
    g = torch.Generator().manual_seed(seed)
    names = [f"t{i}" for i in range(len(shapes))]
    sd = {n: torch.randn(s, generator=g) for n, s in zip(names, shapes)}
    spec = ParamSpec(tuple(names), tuple(shapes))
    v = spec.flatten(sd)
    assert v.shape == (sum(math.prod(s) for s in shapes),)
    back = spec.unflatten(v)
    assert all(torch.equal(back[n], sd[n]) for n in names)
    stacked = {n: torch.randn((batch, *s), generator=g) for n, s in zip(names, shapes)}
    m = spec.flatten_batch(stacked)
    back = spec.unflatten(m)
    assert all(torch.equal(back[n], stacked[n]) for n in names)
    assert torch.equal(spec.flatten_batch([{n: t[i] for n, t in stacked.items()} for i in range(batch)]), m)


def test_select_globs_regex_and_order():
    model = build_model(ArchConfig(name="mlp3", input_shape=(1, 8, 8), num_classes=10))
    spec = ParamSpec.select(model, ["fc3.*", "fc2.*"])  # state-dict order, not pattern order
    assert spec.names == ("fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")
    assert spec.numel == 32 * 16 + 16 + 16 * 10 + 10
    assert ParamSpec.select(model, ["re:^fc[23]\\.weight$"]).names == ("fc2.weight", "fc3.weight")
    assert ParamSpec.select(model, ["*"], exclude=["*.bias"]).names == ("fc1.weight", "fc2.weight", "fc3.weight")
    assert ParamSpec.from_dict(spec.to_dict()) == spec


def test_load_into_changes_only_selected():
    model = build_model(ArchConfig(name="mlp3", input_shape=(1, 8, 8), num_classes=10), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = ParamSpec.select(model, ["fc3.*"])
    v = torch.arange(spec.numel, dtype=torch.float32)
    spec.load_into(model, v)
    assert torch.equal(spec.flatten(model), v)
    assert torch.equal(model.fc1.weight, before["fc1.weight"]) and torch.equal(model.fc2.bias, before["fc2.bias"])


def test_last_batchnorm_layers_of_resnet():
    model = build_model(ArchConfig(name="timm:resnet18", input_shape=(1, 32, 32), num_classes=10))
    pats = last_modules(model, nn.BatchNorm2d, 2)
    assert pats == ["layer4.1.bn1.weight", "layer4.1.bn1.bias", "layer4.1.bn2.weight", "layer4.1.bn2.bias"]
    assert ParamSpec.select(model, pats).numel == 4 * 512


def test_clear_errors():
    model = build_model(ArchConfig(name="mlp3", input_shape=(1, 8, 8), num_classes=10))
    with pytest.raises(ParamSpecError, match="select no tensor"):
        ParamSpec.select(model, ["conv*"])
    with pytest.raises(ParamSpecError, match="matches no tensor"):
        ParamSpec.select(model, ["fc3.*", "typo.*"])
    spec = ParamSpec.select(model, ["fc3.*"])
    with pytest.raises(ParamSpecError, match="expected \\(P,\\) or \\(N, P\\)"):
        spec.unflatten(torch.zeros(spec.numel + 1))
    other = build_model(ArchConfig(name="mlp3", input_shape=(1, 8, 8), num_classes=10, hidden=(32, 8)))
    with pytest.raises(ParamSpecError, match="has shape"):
        spec.flatten(other)
    bad = torch.zeros(spec.numel)
    bad[3] = float("nan")
    with pytest.raises(ParamSpecError, match="NaN"):
        spec.load_into(model, bad)
    with pytest.raises(ParamSpecError, match="lacks"):
        spec.flatten({"fc1.weight": torch.zeros(1)})


@pytest.mark.parametrize("kind", ["none", "position", "layer", "task"])
@given(n=st.integers(2, 12), seed=st.integers(0, 1000), scale=st.floats(1e-4, 1e3))
@settings(max_examples=25, deadline=None)
def test_normaliser_round_trip(tmp_path_factory, kind, n, seed, scale):
    spec = ParamSpec(("a", "b"), ((3, 2), (5,)))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, spec.numel, generator=g) * scale + 3.0
    x[:, 0] = 7.0  # a constant position must survive (std 0)
    groups = torch.arange(n) % 3 if kind == "task" else None
    norm = make_normaliser(kind, spec).fit(x, groups)
    z = norm.transform(x, groups)
    back = norm.inverse(z, groups)
    assert torch.allclose(back, x, rtol=1e-6, atol=1e-6 * scale)
    if kind in ("position", "task"):
        assert z[:, 0].abs().max() == 0
    d = tmp_path_factory.mktemp("norm")
    norm.save(d)
    again = load_normaliser(d)
    assert torch.equal(again.transform(x, groups), z)


def test_task_normaliser_needs_groups_and_known_tasks():
    x = torch.randn(6, 4)
    norm = make_normaliser("task").fit(x, torch.tensor([0, 0, 1, 1, 2, 2]))
    with pytest.raises(ParamSpecError, match="task id"):
        norm.transform(x)
    with pytest.raises(ParamSpecError, match="not seen"):
        norm.transform(x[:1], torch.tensor([5]))
