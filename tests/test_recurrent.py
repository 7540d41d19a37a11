"""RPG's causal sequence models: exact state across windows, causality, the transformer's band and bounded cache."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.nn.recurrent import (
    KINDS,
    SequenceModel,
    SequenceModelConfig,
    build_sequence_model,
    mamba_available,
)

STATEFUL = ("lstm", "gru", "transformer")
D = 8


def _model(kind: str, n_layers: int = 2, context: int = 3, dtype: torch.dtype = torch.float32,
           seed: int = 0) -> SequenceModel:
    torch.manual_seed(seed)
    cfg = SequenceModelConfig(kind=kind, d_model=D, n_layers=n_layers, n_heads=2, context=context)
    return build_sequence_model(cfg).to(dtype).eval()


def _windowed(m: SequenceModel, x: torch.Tensor, cuts: list[int]) -> tuple[torch.Tensor, object]:
    """Outputs of ``x`` processed in the windows between ``cuts``, the state carried."""
    ys, state = [], None
    bounds = [0, *cuts, x.shape[1]]
    for a, b in zip(bounds, bounds[1:]):
        y, state = m(x[:, a:b], state)
        ys.append(y)
    return torch.cat(ys, dim=1), state


# -- exactness across windows ------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(STATEFUL), n_layers=st.sampled_from([1, 2]), context=st.sampled_from([1, 3, 8]),
       length=st.integers(1, 24), data=st.data())
def test_windows_with_state_equal_the_whole_sequence(kind, n_layers, context, length, data):
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, length - 1)), max_size=5)) - {length})
    for dtype, atol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        m = _model(kind, n_layers, context, dtype)
        x = torch.randn(2, length, D, dtype=dtype, generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            whole, _ = m(x)
            parts, _ = _windowed(m, x, cuts)
        assert parts.shape == whole.shape == x.shape
        torch.testing.assert_close(parts, whole, atol=atol, rtol=0)


@pytest.mark.parametrize("kind", STATEFUL)
def test_one_token_windows_and_the_long_window_query_chunks(kind):
    # token by token (windows far shorter than the context), and one window longer than the attention's query
    # chunk (256), which the transformer attends chunk by chunk
    m = _model(kind, context=8, dtype=torch.float64)
    x = torch.randn(1, 600, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, _ = m(x)
        tokens, _ = _windowed(m, x[:, :20], list(range(1, 20)))
        torch.testing.assert_close(tokens, whole[:, :20], atol=1e-10, rtol=0)
        parts, _ = _windowed(m, x, [7, 300])
        torch.testing.assert_close(parts, whole, atol=1e-10, rtol=0)


# -- causality -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", STATEFUL)
@pytest.mark.parametrize("n_layers", [1, 2])
def test_outputs_never_depend_on_later_tokens(kind, n_layers):
    m = _model(kind, n_layers, context=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 30, D, dtype=torch.float64, generator=g)
    with torch.no_grad():
        y, _ = m(x)
        for k in (0, 5, 17, 29):
            x2 = x.clone()
            x2[:, k] += torch.randn(2, D, dtype=torch.float64, generator=g)
            y2, _ = m(x2)
            assert torch.equal(y2[:, :k], y[:, :k]), k
            assert not torch.allclose(y2[:, k], y[:, k]), k
            if kind == "transformer":
                # the band: a token reaches n_layers · context positions ahead and no further
                reach = k + n_layers * 3
                assert torch.allclose(y2[:, reach + 1:], y[:, reach + 1:], atol=1e-12, rtol=0), k
                if reach < 30:
                    assert not torch.allclose(y2[:, reach], y[:, reach]), k


def test_transformer_state_is_bounded_by_the_context():
    m = _model("transformer", n_layers=3, context=5)
    x = torch.randn(1, 200, D, generator=torch.Generator().manual_seed(3))
    state = None
    with torch.no_grad():
        for a in range(0, 200, 7):
            _, state = m(x[:, a:a + 7], state)
            assert len(state) == 3
            assert all(c.shape == (1, min(5, a + 7), D) for c in state)
        # a window shorter than the context keeps the older cached inputs
        _, s1 = m(x[:, :2])
        _, s2 = m(x[:, 2:4], s1)
        assert all(c.shape[1] == 4 for c in s2)
        assert torch.equal(s2[0], x[:, :4])  # layer 0's inputs are the model's inputs
    with pytest.raises(ValueError, match="per-layer caches"):
        m(x[:, :3], state[:2])


# -- gradients -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", STATEFUL)
def test_detach_state_stops_gradients_at_the_window_boundary(kind):
    m = _model(kind)
    x1 = torch.randn(2, 6, D, requires_grad=True)
    x2 = torch.randn(2, 6, D, requires_grad=True)
    _, state = m(x1)
    y2, _ = m(x2, m.detach_state(state))
    y2.pow(2).sum().backward()
    assert x1.grad is None and x2.grad is not None
    # without detaching, the gradient does flow into the previous window
    x1b = x1.detach().requires_grad_()
    _, state = m(x1b)
    m(x2, state)[0].pow(2).sum().backward()
    assert x1b.grad is not None and x1b.grad.abs().sum() > 0
    assert m.detach_state(None) is None


@pytest.mark.parametrize("kind", STATEFUL)
def test_gradients_reach_every_parameter(kind):
    m = _model(kind).train()
    x = torch.randn(2, 10, D)
    y, _ = m(x)
    # a random projection: the plain sum of a LayerNorm's outputs has zero gradient
    (y * torch.randn_like(y)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", STATEFUL)
def test_outputs_are_well_scaled_and_follow_the_input_dtype(kind):
    m = _model(kind, dtype=torch.float64)
    y, _ = m(10 * torch.randn(4, 16, D, dtype=torch.float64))
    assert y.dtype == torch.float64 and torch.isfinite(y).all()
    assert 0.5 < y.std().item() < 2.0


# -- config ----------------------------------------------------------------------------------------------------------
def test_config_validation_and_round_trip():
    cfg = SequenceModelConfig(kind="transformer", d_model=16, n_layers=3, n_heads=4, context=5, dropout=0.1)
    assert SequenceModelConfig.from_dict(cfg.to_dict()) == cfg
    assert list(cfg.to_dict()) == ["kind", "d_model", "n_layers", "n_heads", "context", "dropout"]
    with pytest.raises(ValueError, match="lstm, gru, transformer, mamba"):
        SequenceModelConfig(kind="rwkv")
    with pytest.raises(ValueError, match="d_model=0"):
        SequenceModelConfig(d_model=0)
    with pytest.raises(ValueError, match="context=0"):
        SequenceModelConfig(kind="transformer", context=0)
    with pytest.raises(ValueError, match="dropout"):
        SequenceModelConfig(dropout=1.0)
    with pytest.raises(ValueError, match="divisible by n_heads"):
        SequenceModelConfig(kind="transformer", d_model=10, n_heads=4)
    SequenceModelConfig(kind="lstm", d_model=10, n_heads=4)  # heads only matter to the transformer
    with pytest.raises(ValueError, match="unknown keys"):
        SequenceModelConfig.from_dict({"kind": "gru", "hidden": 3})
    with pytest.raises(ValueError, match="sequence model config: n_layers"):
        SequenceModelConfig.from_dict({"n_layers": "2"})


def test_bad_inputs_are_clear_errors():
    m = _model("gru")
    with pytest.raises(ValueError, match=r"\(batch, window, 8\)"):
        m(torch.randn(3, D))
    with pytest.raises(ValueError, match="empty window"):
        m(torch.randn(1, 0, D))


# -- mamba ----------------------------------------------------------------------------------------------------------
def test_mamba_is_a_valid_kind_without_the_package():
    cfg = SequenceModelConfig(kind="mamba", d_model=32)
    assert "mamba" in KINDS and SequenceModelConfig.from_dict(cfg.to_dict()) == cfg
    if mamba_available():
        pytest.skip("mamba-ssm is installed here")
    with pytest.raises(ImportError, match="mamba-ssm") as err:
        build_sequence_model(cfg)
    assert all(alt in str(err.value) for alt in ("'lstm'", "'gru'", "'transformer'"))


@pytest.mark.skipif(not (mamba_available() and torch.cuda.is_available()), reason="needs mamba-ssm and CUDA")
def test_mamba_runs_whole_sequences_and_refuses_a_state():
    m = build_sequence_model(SequenceModelConfig(kind="mamba", d_model=32)).cuda()
    assert not m.supports_state
    x = torch.randn(2, 64, 32, device="cuda")
    y, state = m(x)
    assert y.shape == x.shape and state is None and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="state"):
        m(x, state=(torch.zeros(1),))
