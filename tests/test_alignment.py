import pytest
import torch

from workbench.core.params import ParamSpec
from workbench.generator.alignment import (
    align_vectors,
    apply_permutation,
    permutation_spec,
    weight_matching,
)
from workbench.zoo import ArchConfig, TrainConfig, build_model, init_members, train_vectorized

ARCHS = [ArchConfig(name="mlp3", input_shape=(1, 8, 8), num_classes=10),
         ArchConfig(name="convnet3", input_shape=(1, 40), num_classes=10, channels=(4, 6, 8)),
         ArchConfig(name="convnet3", input_shape=(1, 16, 16), num_classes=10, channels=(4, 6, 8))]


def _random_perms(ps, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randperm(n, generator=g) for k, (n, _) in ps.groups.items()}


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"{a.name}{len(a.input_shape)}d")
def test_permuted_model_computes_the_same_function(arch):
    model = build_model(arch, seed=0).eval()
    ps = permutation_spec(model)
    permuted = build_model(arch).eval()
    permuted.load_state_dict(apply_permutation(ps, _random_perms(ps, 1), model.state_dict()))
    x = torch.randn(5, *arch.input_shape)
    assert not torch.equal(permuted.state_dict()[next(iter(model.state_dict()))], model.state_dict()[next(iter(model.state_dict()))])
    with torch.no_grad():
        assert torch.allclose(permuted(x), model(x), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"{a.name}{len(a.input_shape)}d")
def test_weight_matching_recovers_a_known_permutation(arch):
    model = build_model(arch, seed=3)
    ps = permutation_spec(model)
    ref = model.state_dict()
    shuffled = apply_permutation(ps, _random_perms(ps, 7), ref)
    perms = weight_matching(ps, ref, shuffled)
    back = apply_permutation(ps, perms, shuffled)
    for k in ref:
        assert torch.allclose(back[k], ref[k]), k


def test_alignment_undoes_the_seed_collapse_of_the_soup():
    from workbench.data import load_dataset
    from workbench.evaluation.evaluate import evaluate

    d = load_dataset("mnist5k", seed=0, n_train=2000, n_test=500)
    arch = ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10)
    states, _ = train_vectorized(arch, init_members(arch, range(8)), d.x_train, d.y_train, TrainConfig(epochs=6))
    template = build_model(arch)
    spec = ParamSpec.select(template)
    vecs = spec.flatten_batch(states)
    aligned, perms = align_vectors(vecs, spec, template)
    members = evaluate(vecs, d, model=template, spec=spec).accuracy
    # every aligned member is the same function as before
    assert (evaluate(aligned, d, model=template, spec=spec).accuracy == members).all()
    soup_before = evaluate(vecs.mean(0, keepdim=True), d, model=template, spec=spec).accuracy[0]
    soup_after = evaluate(aligned.mean(0, keepdim=True), d, model=template, spec=spec).accuracy[0]
    assert soup_after > soup_before + 20, (soup_before, soup_after)
    dist = lambda v: torch.cdist(v.double(), v.double(), compute_mode="donot_use_mm_for_euclid_dist").mean()  # noqa: E731
    assert dist(aligned) < dist(vecs)
    assert all(torch.equal(p, torch.arange(len(p))) for p in perms[0].values())


def test_unsupported_models_are_refused():
    with pytest.raises(ValueError, match="BatchNorm"):
        permutation_spec(build_model(ArchConfig(name="timm:resnet18", input_shape=(1, 32, 32), num_classes=10)))
    arch = ARCHS[0]
    model = build_model(arch)
    with pytest.raises(ValueError, match="select '\\*'"):
        align_vectors(torch.zeros(2, 170), ParamSpec.select(model, ["fc3.*"]), model)
