"""Set Transformer blocks and D2NWG's class-ordered dataset encoder: shapes, symmetries, masking, errors."""

import pytest
import torch

from workbench.nn.set_transformer import ISAB, MAB, PMA, SAB, ClassSetEncoder, SetEncoderConfig

F_IN = 12
SMALL = dict(in_features=F_IN, dim=16, heads=2, n_inducing=4, n_isab=2, n_cross=1, out_dim=8)
POOLINGS = ["set_transformer", "mean"]


def _encoder(pooling: str = "set_transformer", seed: int = 0, **kw) -> ClassSetEncoder:
    torch.manual_seed(seed)
    return ClassSetEncoder(SetEncoderConfig(**{**SMALL, "pooling": pooling, **kw})).eval()


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- shapes ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 1, 6), (2, 4, 1), (1, 1, 1)])
def test_output_shape_for_any_classes_and_shots(pooling, shape):
    out = _encoder(pooling)(_x(*shape, F_IN))
    assert out.shape == (shape[0], shape[1], SMALL["out_dim"]) and torch.isfinite(out).all()


def test_default_config_on_backbone_width():
    cfg = SetEncoderConfig(in_features=1280)
    assert (cfg.dim, cfg.heads, cfg.n_inducing, cfg.n_isab, cfg.n_cross, cfg.out_dim, cfg.pooling) == \
        (128, 4, 16, 2, 1, 128, "set_transformer")
    torch.manual_seed(0)
    assert ClassSetEncoder(cfg)(_x(1, 3, 5, 1280)).shape == (1, 3, 128)


def test_classes_of_one_dataset_see_each_other_only_with_cross_attention():
    x = _x(1, 3, 4, F_IN)
    y = x.clone()
    y[0, 2] += 1.0  # change class 2 only
    for n_cross, pooling, moves in ((1, "set_transformer", True), (0, "set_transformer", False),
                                    (1, "mean", False)):
        enc = _encoder(pooling, n_cross=n_cross)
        moved = not torch.allclose(enc(x)[0, :2], enc(y)[0, :2], atol=1e-6)
        assert moved == moves, (n_cross, pooling)


# -- symmetries --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", POOLINGS)
def test_invariant_to_example_order_within_each_class(pooling):
    enc = _encoder(pooling)
    x = _x(2, 3, 6, F_IN)
    g = torch.Generator().manual_seed(1)
    shuffled = x.clone()
    for b in range(2):
        for c in range(3):  # an independent permutation per class
            shuffled[b, c] = x[b, c, torch.randperm(6, generator=g)]
    assert torch.allclose(enc(shuffled), enc(x), atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_equivariant_to_class_order(pooling):
    enc = _encoder(pooling)
    x = _x(2, 5, 4, F_IN)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(enc(x[:, perm]), enc(x)[:, perm], atol=1e-5)


# -- masking -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padded_examples_have_no_effect(pooling):
    enc = _encoder(pooling)
    shots = [3, 1, 5]  # classes with different shot counts
    x = _x(1, 3, 5, F_IN)
    mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    for c, k in enumerate(shots):
        mask[0, c, :k] = True
    garbage = x.clone()
    garbage[~mask] = 1e4 * _x(int((~mask).sum()), F_IN, seed=2)
    ref = torch.cat([enc(x[:, c:c + 1, :k], None) for c, k in enumerate(shots)], dim=1) if pooling == "mean" else None
    out = enc(garbage, mask)
    assert torch.allclose(out, enc(x, mask), atol=1e-5)
    nan_padded = x.masked_fill(~mask.unsqueeze(-1), float("nan"))  # even NaN in a padded slot is ignored
    assert torch.allclose(enc(nan_padded, mask), out, atol=1e-5)
    if ref is not None:  # mean pooling has no cross-class context: each class alone, unpadded, is the reference
        assert torch.allclose(out, ref, atol=1e-5)
    # the padded batch equals running each dataset's classes at their true shot counts via encode_support
    labels = torch.cat([torch.full((k,), c) for c, k in enumerate(shots)])
    feats = torch.cat([x[0, c, :k] for c, k in enumerate(shots)])
    assert torch.allclose(enc.encode_support(feats, labels, 3), out[0], atol=1e-5)


@pytest.mark.parametrize("block", ["mab", "sab", "isab", "pma"])
def test_blocks_ignore_padded_elements(block):
    torch.manual_seed(0)
    dim = 8
    module = {"mab": lambda: MAB(dim, dim, dim, 2), "sab": lambda: SAB(dim, dim, 2),
              "isab": lambda: ISAB(dim, dim, 2, 3), "pma": lambda: PMA(dim, 2, 2)}[block]()
    x = _x(2, 5, dim)
    mask = torch.tensor([[True, True, True, False, False], [True, False, True, True, False]])
    garbage = x.masked_fill(~mask.unsqueeze(-1), 1e5)

    def run(t: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        q = _x(t.shape[0], 2, dim, seed=3)
        return module(q, t, m) if block == "mab" else module(t, m)

    a, b = run(x, mask), run(garbage, mask)
    if block in ("sab", "isab"):  # set → set: compare the valid rows (padded rows come out as 0)
        assert torch.allclose(a[mask], b[mask], atol=1e-5) and (b[~mask] == 0).all()
        for i in range(2):  # and each set alone, without padding, gives the same valid rows
            assert torch.allclose(run(x[i:i + 1, mask[i]], None)[0], a[i][mask[i]], atol=1e-5)
    else:
        assert torch.allclose(a, b, atol=1e-5)
        for i in range(2):
            alone = module(_x(2, 2, dim, seed=3)[i:i + 1], x[i:i + 1, mask[i]]) if block == "mab" \
                else module(x[i:i + 1, mask[i]])
            assert torch.allclose(alone[0], a[i], atol=1e-5)


def test_block_mask_errors():
    torch.manual_seed(0)
    sab = SAB(4, 4, 2)
    with pytest.raises(ValueError, match="at least one valid"):
        sab(torch.zeros(2, 3, 4), torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match=r"bool tensor of shape \(2, 3\)"):
        sab(torch.zeros(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="divisible"):
        MAB(4, 4, 6, 4)


# -- encode_support ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", POOLINGS)
def test_encode_support_matches_forward_on_grouped_tensor(pooling):
    enc = _encoder(pooling)
    feats = _x(7, F_IN)
    labels = torch.tensor([2, 0, 1, 2, 0, 2, 1])  # interleaved: 2 / 2 / 3 examples for classes 0 / 1 / 2
    x = torch.zeros(1, 3, 3, F_IN)
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    for c in range(3):
        idx = (labels == c).nonzero().flatten()
        x[0, c, :len(idx)], mask[0, c, :len(idx)] = feats[idx], True
    out = enc.encode_support(feats, labels, 3)
    assert out.shape == (3, SMALL["out_dim"])
    assert torch.allclose(out, enc(x, mask)[0], atol=1e-5)


def test_encode_support_errors():
    enc = _encoder()
    feats = _x(4, F_IN)
    with pytest.raises(ValueError, match="class 1 has no support example"):
        enc.encode_support(feats, torch.tensor([0, 0, 2, 2]), 3)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        enc.encode_support(feats, torch.tensor([0, 1, 2, 3]), 3)
    with pytest.raises(ValueError, match="integer"):
        enc.encode_support(feats, torch.tensor([0.0, 1.0, 2.0, 0.0]), 3)
    with pytest.raises(ValueError, match="labels"):
        enc.encode_support(feats, torch.tensor([0, 1, 2]), 3)


# -- input errors ------------------------------------------------------------------------------------------------
def test_forward_errors():
    enc = _encoder()
    with pytest.raises(ValueError, match=r"\(datasets, classes, shots, features\).*3-D"):
        enc(_x(3, 4, F_IN))
    with pytest.raises(ValueError, match="feature width 5 != in_features=12"):
        enc(_x(1, 2, 3, 5))
    bad = _x(1, 2, 3, F_IN)
    bad[0, 1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        enc(bad)
    bad[0, 1, 2, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        enc(bad)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[1, 2] = False
    with pytest.raises(ValueError, match="class 2 of dataset 1 has no valid example"):
        enc(_x(2, 3, 4, F_IN), mask)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        enc(_x(2, 3, 4, F_IN), mask.float())
    with pytest.raises(ValueError, match="no valid example"):
        enc(torch.zeros(1, 2, 0, F_IN))


def test_config_errors_and_round_trip():
    with pytest.raises(ValueError, match=r"pooling='max'.*'set_transformer', 'mean'"):
        SetEncoderConfig(in_features=4, pooling="max")
    with pytest.raises(ValueError, match="dim=10 must be divisible by heads=4"):
        SetEncoderConfig(in_features=4, dim=10, heads=4)
    with pytest.raises(ValueError, match="n_inducing=0"):
        SetEncoderConfig(in_features=4, n_inducing=0)
    with pytest.raises(ValueError, match="in_features"):
        SetEncoderConfig.from_dict({"dim": 16})
    for cfg in (SetEncoderConfig(in_features=1280), SetEncoderConfig(**SMALL, pooling="mean")):
        assert SetEncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert list(SetEncoderConfig(in_features=3).to_dict()) == ["in_features", "dim", "heads", "n_inducing", "n_isab",
                                                              "n_cross", "out_dim", "pooling"]


# -- training ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", POOLINGS)
def test_gradients_reach_every_parameter(pooling):
    enc = _encoder(pooling).train()
    x = _x(2, 3, 4, F_IN)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[0, 1, 2:] = False
    target = _x(2, 3, SMALL["out_dim"], seed=5)
    ((enc(x, mask) - target) ** 2).mean().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name
