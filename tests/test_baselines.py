"""The baselines every generated model is compared with (``workbench.evaluation.baselines``): what each one is,
exactly, since a verdict is only as honest as the baselines beside it. Seeded, seconds-sized."""

from __future__ import annotations

import copy
import math

import torch

from workbench.core.params import ParamSpec
from workbench.evaluation import baselines
from workbench.evaluation.baselines import finetuned, noise_added, per_position_gaussian, soup
from workbench.nn.architectures import ArchConfig, build_model

# Every statistical check below allows 5 standard errors of the estimate it makes: a false alarm has a chance of
# about 6e-7 per check, and the draws are seeded, so a pass is a pass on every machine with the same torch RNG.
Z = 5.0


def _std_rtol(n: int) -> float:
    """5 standard errors of a sample std relative to the true std (n normal draws: SE ≈ 1 / sqrt(2 (n - 1)))."""
    return Z / math.sqrt(2 * (n - 1))


# -- soup ----------------------------------------------------------------------------------------------------
def test_soup_is_the_float64_mean():
    # float32 cannot hold 1e8 + 1: averaging in float32 loses the 1 (mean 0); float64 keeps it (mean 1/3)
    v = torch.tensor([[1e8, 0.5], [1.0, 0.25], [-1e8, 0.75]])
    assert v.mean(0)[0] != v.double().mean(0)[0].float()  # the case does tell float32 from float64 here
    s = soup(v)
    assert s.shape == (1, 2) and s.dtype == torch.float32
    assert torch.equal(s, v.double().mean(0, keepdim=True).float())
    assert s[0, 0].item() == torch.tensor(1 / 3).item()


# -- noise-added originals -------------------------------------------------------------------------------------
def test_noise_is_sigma_times_each_tensors_std_per_member():
    spec = ParamSpec(("big", "small", "flat"), ((100, 60), (40, 50), (10,)))
    g = torch.Generator().manual_seed(1)
    member_scale = torch.tensor([[1.0], [4.0]])  # the second member's tensors are 4× wider
    v = torch.cat([100.0 * torch.randn(2, 6000, generator=g) * member_scale,  # tensor std ~100 (×4)
                   0.01 * torch.randn(2, 2000, generator=g) * member_scale,   # tensor std ~0.01 (×4)
                   torch.full((2, 10), 3.0)], dim=1)                            # constant: std 0
    sigma = 0.1
    out = noise_added(v, spec, sigma, seed=0)
    assert out.shape == v.shape and not torch.equal(out, v)
    for name, sl in spec.slices().items():
        for m in range(2):
            noise, scale = (out - v)[m, sl], v[m, sl].std()
            if name == "flat":
                assert torch.equal(noise, torch.zeros_like(noise))  # a constant tensor gets no noise
                continue
            # the noise's std is σ × this member's std of this tensor; the whole vector's std (≈ 90 here) would
            # give the small tensor noise ~10^4 times too large
            ratio = (noise.std() / (sigma * scale)).item()
            assert abs(ratio - 1) < _std_rtol(noise.numel()), (name, m, ratio)
            assert abs(noise.mean().item()) < Z * sigma * scale.item() / math.sqrt(noise.numel())
    assert (out - v)[:, spec.slices()["small"]].abs().max() < 1.0  # nowhere near the whole vector's scale


def test_noise_on_a_single_entry_tensor_scales_with_its_magnitude():
    spec = ParamSpec(("bias",), ((1,),))
    v = torch.tensor([1.0, -2.0, 3.0]).repeat(2000).reshape(-1, 1)  # 6000 members, one entry each
    out = noise_added(v, spec, 0.5, seed=3)
    z = (out - v) / (0.5 * v.abs())  # a one-entry tensor has no std: its |value| is the scale
    assert abs(z.std().item() - 1) < _std_rtol(len(z))


def test_noise_is_seeded_and_leaves_the_originals_alone():
    spec = ParamSpec(("w",), ((5, 4),))
    v = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    before = v.clone()
    a, b, c = noise_added(v, spec, 0.2, seed=7), noise_added(v, spec, 0.2, seed=7), noise_added(v, spec, 0.2, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(v, before)


# -- per-position Gaussian ---------------------------------------------------------------------------------------
def test_per_position_gaussian_has_the_zoos_mean_and_std():
    g = torch.Generator().manual_seed(2)
    n_zoo, n = 5, 20_000
    base = torch.randn(n_zoo, 1, generator=g)
    # positions of very different location and scale; positions 0 and 1 perfectly correlated in the zoo
    zoo = torch.cat([base, 2 * base, 100 + 0.01 * torch.randn(n_zoo, 1, generator=g),
                     -3 + 10 * torch.randn(n_zoo, 1, generator=g)], dim=1)
    mean, std = zoo.double().mean(0), zoo.double().std(0)  # the unbiased std (N - 1): what the baseline fits
    draws = per_position_gaussian(zoo, n, seed=0)
    assert draws.shape == (n, 4) and draws.dtype == torch.float32
    d = draws.double()
    # mean: SE = std / sqrt(n); std: relative SE ≈ 1 / sqrt(2n), 5 SE = 2.5 %. With N = 5 the unbiased std is
    # 12 % above the biased one, so the check also tells the two apart.
    assert ((d.mean(0) - mean).abs() < Z * std / math.sqrt(n)).all(), (d.mean(0), mean)
    assert ((d.std(0) / std - 1).abs() < _std_rtol(n)).all(), (d.std(0), std)
    assert ((zoo.double().std(0, unbiased=False) / std - 1).abs() > 2 * _std_rtol(n)).all()
    # independent positions: the zoo's perfect correlation of 0 and 1 is not kept (|r| < 5 / sqrt(n))
    r = torch.corrcoef(d[:, :2].T)[0, 1]
    assert abs(r) < Z / math.sqrt(n)


def test_per_position_gaussian_is_seeded():
    zoo = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    a, b, c = (per_position_gaussian(zoo, 4, seed=s) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    one = per_position_gaussian(zoo[:1], 3, seed=0)  # one member: no spread to fit, every draw is that member
    assert torch.equal(one, zoo[:1].expand(3, -1))


# -- fine-tuned originals ----------------------------------------------------------------------------------------
def _setup(n_members: int = 3):
    """A small MLP-3, a spec of two of its tensors (fc2.bias and fc3.bias stay out of it), members and data."""
    model = build_model(ArchConfig("mlp3", (1, 6, 6), 3, hidden=(8, 6)), seed=0)
    spec = ParamSpec.select(model, ["fc2.weight", "fc3.weight"])
    g = torch.Generator().manual_seed(0)
    base = spec.flatten(model)
    vectors = base + 0.1 * torch.randn(n_members, spec.numel, generator=g)
    x, y = torch.randn(64, 1, 6, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    return model, spec, vectors, x, y


def test_finetuning_moves_only_the_specs_tensors(monkeypatch):
    model, spec, vectors, x, y = _setup()
    original = copy.deepcopy(model.state_dict())
    suffixes: list = []
    monkeypatch.setattr(baselines, "split_model", _spying(suffixes))
    out = finetuned(vectors, model, spec, x, y, steps=5, lr=0.05, batch_size=16, seed=0)
    assert out.shape == vectors.shape and not torch.allclose(out, vectors)  # the spec's tensors moved
    for name, t in model.state_dict().items():
        assert torch.equal(t, original[name]), f"the model passed in changed: {name}"
    (suffix, name_map), = suffixes
    trained = suffix.state_dict()
    assert name_map  # fine-tuning ran on a suffix holding fc2 and fc3 (and their biases, which are not in the spec)
    for name, inner in name_map.items():
        if name not in spec.names:
            assert torch.equal(trained[inner], original[name]), f"{name} is not in the spec but changed"
    assert {"fc2.bias", "fc3.bias"} <= set(name_map)


def _spying(store: list):
    real = baselines.split_model

    def spy(*args, **kwargs):
        """split_model, keeping the module fine-tuning will run on to look at its tensors afterwards."""
        prefix, suffix, name_map = real(*args, **kwargs)
        store.append((suffix, name_map))
        return prefix, suffix, name_map

    return spy


def test_finetuning_is_seeded_and_each_member_on_its_own():
    model, spec, vectors, x, y = _setup()
    kw = {"steps": 5, "lr": 0.05, "batch_size": 16}
    a, b = finetuned(vectors, model, spec, x, y, seed=0, **kw), finetuned(vectors, model, spec, x, y, seed=0, **kw)
    assert torch.equal(a, b)
    assert not torch.allclose(a, finetuned(vectors, model, spec, x, y, seed=1, **kw))  # another minibatch order
    # no state (momentum, weights) carries from one member to the next: a member alone gives the same row
    alone = finetuned(vectors[2:3], model, spec, x, y, seed=0, **kw)
    assert torch.allclose(alone[0], a[2], atol=1e-6)
