import torch

from workbench.core.params import ParamSpec, last_modules
from workbench.evaluation.evaluate import MemberEvaluator, evaluate, split_model
from workbench.zoo import ArchConfig, build_model


def test_vectors_and_modules_give_the_same_result(mnist_small):
    arch = ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10)
    models = [build_model(arch, seed=s).eval() for s in range(5)]
    spec = ParamSpec.select(models[0], ["fc2.*", "fc3.*"])
    base = build_model(arch, seed=0)
    for m in models:  # only the selected tensors differ from the base
        m.fc1.load_state_dict(base.fc1.state_dict())
    vecs = spec.flatten_batch([m.state_dict() for m in models])
    a = evaluate(vecs, mnist_small, model=base, spec=spec)
    b = evaluate(models, mnist_small)
    assert (a.accuracy == b.accuracy).all() and torch.equal(a.predictions, b.predictions)
    assert abs(a.loss - b.loss).max() < 1e-5
    assert a.wrong().shape == (5, 300)


def test_prefix_cut_is_verified_on_resnet():
    model = build_model(ArchConfig(name="timm:resnet18", input_shape=(1, 32, 32), num_classes=10), seed=0).eval()
    names = last_modules(model, torch.nn.BatchNorm2d, 2)
    x = torch.randn(4, 1, 32, 32)
    prefix, suffix, name_map = split_model(model, names, probe=x)
    assert not isinstance(prefix, torch.nn.Identity)  # the cut happened before layer4.1
    assert name_map["layer4.1.bn1.weight"].startswith("b0.")
    with torch.no_grad():
        assert torch.allclose(suffix(prefix(x)), model(x), atol=1e-5)


def test_resnet_bn_vectors_evaluate_like_loaded_models():
    model = build_model(ArchConfig(name="timm:resnet18", input_shape=(1, 32, 32), num_classes=10), seed=0).eval()
    spec = ParamSpec.select(model, last_modules(model, torch.nn.BatchNorm2d, 2))
    g = torch.Generator().manual_seed(0)
    vecs = spec.flatten(model) + 0.5 * torch.randn(3, spec.numel, generator=g)
    x, y = torch.randn(20, 1, 32, 32, generator=g), torch.randint(0, 10, (20,), generator=g)
    ev = MemberEvaluator(model, spec, probe=x)
    fast = ev(vecs, x, y)
    slow = evaluate([spec.load_into(build_model(ArchConfig(name="timm:resnet18", input_shape=(1, 32, 32),
                                                           num_classes=10), seed=0), v) for v in vecs], (x, y))
    assert torch.equal(fast.predictions, slow.predictions)


def test_evaluating_vectors_needs_model_and_spec(mnist_small):
    import pytest

    with pytest.raises(ValueError, match="model=..., spec=..."):
        evaluate(torch.zeros(2, 5), mnist_small)


def test_feature_cache_never_serves_stale_features():
    """Regression: the prefix cache was keyed by data_ptr and shape only; a freed input's memory reused by a new
    tensor of the same shape returned the old features (seen as one task of a LoRA zoo scoring at chance). Writing
    new content into the same buffer reproduces that collision deterministically."""
    import torch.nn as nn

    from workbench.core.params import ParamSpec
    from workbench.evaluation.evaluate import MemberEvaluator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    spec = ParamSpec.select(model, ["2.*"])
    ev = MemberEvaluator(model, spec, probe=torch.randn(4, 16))
    assert not isinstance(ev.prefix, nn.Identity)  # the first layer runs once and is cached
    v = spec.flatten(model.state_dict())[None]
    buf = torch.empty(256, 16)
    for seed in range(5):
        buf.copy_(torch.randn(256, 16, generator=torch.Generator().manual_seed(seed)))  # same pointer, same shape
        with torch.no_grad():
            y = model(buf).argmax(1)
        assert ev(v, buf, y).accuracy[0] == 100.0, seed  # the model's own predictions: always 100 %
