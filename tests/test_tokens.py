"""RPG token layouts: exact round trips, windows, geometry against a naive reference, stats and position embeddings."""

from __future__ import annotations

import itertools
import json
import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.core.params import ParamSpec
from workbench.core.tokens import (
    SCHEMES,
    LayerTokenStats,
    TokenLayout,
    position_embedding_2d,
    token_layout,
)

# shape lists with 0-d, 1-d and 2-/3-d tensors (rows shorter and longer than the token size), sometimes empty ones
_dim = st.integers(1, 9) | st.just(0)
_shape = st.lists(_dim, min_size=0, max_size=3).map(tuple)
shape_lists = st.lists(_shape, min_size=1, max_size=5).filter(lambda ss: sum(math.prod(s) for s in ss) > 0)
token_sizes = st.integers(1, 40)
schemes = st.sampled_from(SCHEMES)


def _vectors(layout: TokenLayout, n: int | None, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (layout.n_params,) if n is None else (n, layout.n_params)
    return torch.randn(shape, generator=g)


def _reference_tokens(shapes: tuple[tuple[int, ...], ...], size: int, scheme: str) -> list[tuple[int, list[int]]]:
    """Naive (tensor, flat indices padded with -1) per token, written straight from RPG's description."""
    def cut(idx: list[int]) -> list[list[int]]:
        idx = idx + [-1] * (-len(idx) % size)
        return [idx[i:i + size] for i in range(0, len(idx), size)]

    numels = [math.prod(s) for s in shapes]
    offs = [sum(numels[:i]) for i in range(len(shapes))]
    if scheme == "flat":
        return [(-1, tok) for tok in cut(list(range(sum(numels))))]
    out = []
    for layer, (s, off, n) in enumerate(zip(shapes, offs, numels)):
        if scheme == "layer" or len(s) < 2 or n == 0:
            out += [(layer, tok) for tok in cut(list(range(off, off + n)))]
            continue
        r = n // s[0]
        rows = [list(range(off + i * r, off + (i + 1) * r)) for i in range(s[0])]
        if r <= size:
            k = size // r
            out += [(layer, cut([e for row in rows[i:i + k] for e in row])[0]) for i in range(0, len(rows), k)]
        else:
            out += [(layer, tok) for row in rows for tok in cut(row)]
    return out


# -- geometry --------------------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(shape_lists, token_sizes, schemes)
def test_index_matches_naive_reference(shapes, size, scheme):
    layout = TokenLayout(scheme, size, shapes)
    ref = _reference_tokens(shapes, size, scheme)
    assert layout.n_tokens == len(ref) and layout.n_params == sum(math.prod(s) for s in shapes)
    assert layout.index(0, layout.n_tokens).tolist() == [tok for _, tok in ref]
    if scheme != "flat":
        for layer in range(layout.n_layers):
            assert list(layout.tokens_of_layer(layer)) == [i for i, (lay, _) in enumerate(ref) if lay == layer]


@settings(max_examples=150, deadline=None)
@given(shape_lists, token_sizes, schemes)
def test_mask_layers_and_rows(shapes, size, scheme):
    layout = TokenLayout(scheme, size, shapes)
    idx, mask = layout.index(0, layout.n_tokens), layout.mask(0, layout.n_tokens)
    layers = layout.element_layers(0, layout.n_tokens)
    assert int(mask.sum()) == layout.n_params
    assert torch.equal(mask, idx >= 0) and torch.equal(layers >= 0, mask)
    # real slots are a prefix of each token and, read in order, the flat vector itself
    assert torch.equal(idx[mask], torch.arange(layout.n_params))
    assert (mask[:, 0]).all() and torch.equal(mask, mask.cummin(dim=1).values)
    ids = ParamSpec(tuple(f"t{i}" for i in range(len(shapes))), shapes).layer_ids()
    assert torch.equal(layers[mask], ids)
    for t in range(layout.n_tokens):
        real_layers = layers[t][mask[t]]
        if scheme != "flat":  # tokens never span tensors
            assert (real_layers == real_layers[0]).all()
        lay = int(real_layers[0])
        s = shapes[lay]
        if scheme == "channel" and len(s) >= 2:
            r = math.prod(s) // s[0]
            local = idx[t][mask[t]] - sum(math.prod(x) for x in shapes[:lay])
            if r > size:  # a long row's tokens stay inside the row
                assert (local // r == local[0] // r).all()
            else:  # whole rows only, as many as fit
                assert int(local[0]) % r == 0 and len(local) % r == 0 and len(local) <= (size // r) * r
    for layer in range(layout.n_layers):
        toks = layout.tokens_of_layer(layer)
        inside = [t for t in range(layout.n_tokens) if (layers[t] == layer).any()]
        assert list(toks) == inside


@settings(max_examples=100, deadline=None)
@given(shape_lists, token_sizes, schemes)
def test_positions(shapes, size, scheme):
    layout = TokenLayout(scheme, size, shapes)
    pos = layout.positions()
    assert pos.shape == (layout.n_tokens, 2) and pos.dtype == torch.int64
    assert (pos[1:, 0] >= pos[:-1, 0]).all() and (pos[:, 1] >= 0).all()
    first_layer = layout.element_layers(0, layout.n_tokens)[:, 0]
    assert torch.equal(pos[:, 0], first_layer)
    for t in range(layout.n_tokens):
        lay = int(pos[t, 0])
        assert int(pos[t, 1]) == t - layout.tokens_of_layer(lay).start
        if scheme != "flat" and t > 0:  # the token index restarts at 0 at each new layer
            assert int(pos[t, 1]) == (0 if lay != int(pos[t - 1, 0]) else int(pos[t - 1, 1]) + 1)
    assert torch.equal(layout.positions(1, layout.n_tokens), pos[1:])


# -- values ------------------------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(shape_lists, token_sizes, schemes, st.sampled_from([None, 1, 3]), st.integers(0, 1000))
def test_round_trip_exact(shapes, size, scheme, n, seed):
    layout = TokenLayout(scheme, size, shapes)
    v = _vectors(layout, n, seed)
    t = layout.tokenise(v)
    lead = () if n is None else (n,)
    assert t.shape == lead + (layout.n_tokens, size) and t.dtype == v.dtype
    assert (t[..., ~layout.mask(0, layout.n_tokens)] == 0).all()
    assert torch.equal(layout.detokenise(t), v)
    assert torch.equal(layout.detokenise(t.double()), v.double())


@settings(max_examples=150, deadline=None)
@given(shape_lists, token_sizes, schemes, st.data())
def test_windows(shapes, size, scheme, data):
    layout = TokenLayout(scheme, size, shapes)
    v = _vectors(layout, 2, data.draw(st.integers(0, 1000)))
    full = layout.tokenise(v)
    start = data.draw(st.integers(0, layout.n_tokens))
    stop = data.draw(st.integers(start, layout.n_tokens))
    lo, hi = layout.flat_range(start, stop)
    window = layout.tokenise_slice(v[..., lo:hi], start, stop)
    assert torch.equal(window, full[..., start:stop, :])
    assert torch.equal(layout.tokenise(v, start, stop), window)
    assert torch.equal(layout.tokenise(v[0], start, stop), window[0])
    assert torch.equal(layout.detokenise_slice(window, start, stop), v[..., lo:hi])
    # consecutive windows tile the flat vector and rebuild it exactly
    cuts = sorted(data.draw(st.lists(st.integers(0, layout.n_tokens), max_size=5)) + [0, layout.n_tokens])
    pieces, end = [], 0
    for a, b in itertools.pairwise(cuts):
        lo, hi = layout.flat_range(a, b)
        assert lo == end
        end = hi
        pieces.append(layout.detokenise_slice(full[..., a:b, :], a, b))
    assert end == layout.n_params and torch.equal(torch.cat(pieces, dim=-1), v)


@settings(max_examples=200, deadline=None)
@given(shape_lists, token_sizes, schemes, st.data())
def test_consecutive_tokens_cover_contiguous_flat_ranges(shapes, size, scheme, data):
    layout = TokenLayout(scheme, size, shapes)
    start = data.draw(st.integers(0, layout.n_tokens - 1))
    stop = data.draw(st.integers(start + 1, layout.n_tokens))
    lo, hi = layout.flat_range(start, stop)
    idx = layout.index(start, stop)
    assert torch.equal(idx[idx >= 0], torch.arange(lo, hi))
    mid = data.draw(st.integers(start, stop))
    assert layout.flat_range(start, mid)[1] == layout.flat_range(mid, stop)[0] == (
        layout.flat_range(mid, mid)[0])


def test_empty_tensors_and_the_end():
    layout = TokenLayout("channel", 4, ((0, 3), (2, 3), (), (5, 0)))
    assert layout.n_params == 7 and layout.n_tokens == 3
    assert list(layout.tokens_of_layer(0)) == [] and list(layout.tokens_of_layer(3)) == []
    assert layout.flat_range(3, 3) == (7, 7) and layout.index(3, 3).shape == (0, 4)
    v = torch.arange(7.0)
    assert torch.equal(layout.tokenise(v, 3, 3), torch.zeros(0, 4))
    assert torch.equal(layout.detokenise(layout.tokenise(v)), v)


def test_large_layout_holds_nothing_model_sized():
    spec = ParamSpec(("w", "b"), ((4096, 2500), (4096,)))
    for scheme in SCHEMES:
        layout = token_layout(spec, 64, scheme)
        assert layout.n_params == 4096 * 2500 + 4096

        def sizes(layout: TokenLayout = layout) -> list[int]:
            out = []
            for value in vars(layout).values():
                if isinstance(value, torch.Tensor):
                    out.append(value.numel())
                elif isinstance(value, (tuple, list)):
                    out.append(len(value))
            return out

        assert max(sizes()) < 100
        s = layout.n_tokens // 2 + 7
        idx = layout.index(s, s + 100)
        assert idx.shape == (100, 64)
        lo, hi = layout.flat_range(s, s + 100)
        assert torch.equal(idx[idx >= 0], torch.arange(lo, hi))
        chunk = torch.randn(2, hi - lo)
        tok = layout.tokenise_slice(chunk, s, s + 100)
        assert torch.equal(layout.detokenise_slice(tok, s, s + 100), chunk)
        last = layout.tokenise_slice(torch.ones(4096), layout.tokens_of_layer(1).start, layout.n_tokens) \
            if scheme != "flat" else None
        assert last is None or int(last.sum()) == 4096
        assert max(sizes()) < 100  # nothing cached per window
    assert token_layout(spec, 64, "channel").n_tokens == 4096 * 40 + 64
    assert token_layout(spec, 64, "flat").n_tokens == math.ceil(spec.numel / 64)


def test_to_dict_round_trip():
    for scheme in SCHEMES:
        layout = TokenLayout(scheme, 7, ((3, 4), (5,), ()))
        d = json.loads(json.dumps(layout.to_dict()))
        back = TokenLayout.from_dict(d)
        assert back == layout and hash(back) == hash(layout) and back.n_tokens == layout.n_tokens
        copied = pickle.loads(pickle.dumps(layout))
        assert copied == layout and torch.equal(copied.index(0, copied.n_tokens), layout.index(0, layout.n_tokens))
    assert TokenLayout("layer", 3, [[2, 2], [1]]).shapes == ((2, 2), (1,))
    with pytest.raises(ValueError, match="n_tokens=99"):
        TokenLayout.from_dict({**layout.to_dict(), "n_tokens": 99})
    with pytest.raises(ValueError, match="unknown \\['size'\\]"):
        TokenLayout.from_dict({**layout.to_dict(), "size": 3})
    with pytest.raises(ValueError, match="missing \\['scheme'\\]"):
        TokenLayout.from_dict({"token_size": 3, "shapes": [[2]]})


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown token scheme 'rows'.*'layer', 'flat', 'channel'"):
        TokenLayout("rows", 4, ((2,),))
    with pytest.raises(ValueError, match="token_size must be >= 1"):
        TokenLayout("layer", 0, ((2,),))
    with pytest.raises(ValueError, match="token_size must be an integer"):
        TokenLayout("layer", 2.5, ((2,),))
    with pytest.raises(ValueError, match="hold no parameter"):
        TokenLayout("layer", 4, ((0, 3),))
    with pytest.raises(ValueError, match="at least one tensor shape"):
        TokenLayout("layer", 4, ())
    with pytest.raises(ValueError, match="cannot be negative"):
        TokenLayout("layer", 4, ((-1,),))
    with pytest.raises(ValueError, match="takes a ParamSpec"):
        token_layout(((3,),), 4)
    layout = TokenLayout("layer", 4, ((3, 2), (5,)))  # 11 parameters, 4 tokens
    for start, stop in ((0, 5), (-1, 2), (3, 2)):
        with pytest.raises(ValueError, match="out of bounds: the layout has 4 tokens"):
            layout.index(start, stop)
    with pytest.raises(ValueError, match="out of range: the layout has 2 tensors"):
        layout.tokens_of_layer(2)
    with pytest.raises(ValueError, match="got 12 parameters, the layout holds 11: was it built from another"):
        layout.tokenise(torch.zeros(2, 12))
    bad = torch.zeros(11)
    bad[4] = float("nan")
    with pytest.raises(ValueError, match="1 NaN and 0 inf"):
        layout.tokenise(bad)
    layout.tokenise(bad, 2, 4)  # a window that does not read the NaN is fine
    with pytest.raises(ValueError, match="flat_range\\(1, 3\\)"):
        layout.tokenise_slice(torch.zeros(11), 1, 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 4\) tokens"):
        layout.detokenise(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 4\) tokens"):
        layout.detokenise_slice(torch.zeros(3, 4), 1, 3)


# -- per-layer statistics -------------------------------------------------------------------------------------------
def _zoo(layout: TokenLayout, n: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cols = []
    for i, k in enumerate(layout.numels):  # each tensor its own offset and scale
        cols.append(torch.randn(n, k, generator=g) * (0.1 + i) + 3.0 * (i - 1))
    return torch.cat(cols, dim=1)


SHAPES = ((6, 5), (6,), (3, 2, 2), (), (7, 9))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_stats_fit_streamed_equals_full(scheme):
    layout = TokenLayout(scheme, 8, SHAPES)
    v = _zoo(layout)
    full = LayerTokenStats.fit(layout, v)
    streamed = LayerTokenStats.fit(layout, iter(v.split(5)))
    rows = LayerTokenStats.fit(layout, [row for row in v])  # 1-d chunks are one checkpoint each
    for other in (streamed, rows):
        assert torch.allclose(other.mean, full.mean, rtol=1e-12, atol=1e-12)
        assert torch.allclose(other.std, full.std, rtol=1e-12, atol=1e-12)
    offs = [0, *torch.tensor(layout.numels).cumsum(0).tolist()]
    for i in range(layout.n_layers):
        block = v[:, offs[i]:offs[i + 1]].double()
        assert full.mean[i].item() == pytest.approx(block.mean().item(), rel=1e-12, abs=1e-12)
        assert full.std[i].item() == pytest.approx(block.std(unbiased=False).item(), rel=1e-12, abs=1e-12)
    assert full.mean.dtype == torch.float64 and full.std.dtype == torch.float64


@pytest.mark.parametrize("scheme", SCHEMES)
def test_stats_normalise_windows(scheme):
    layout = TokenLayout(scheme, 8, SHAPES)
    v = _zoo(layout)
    stats = LayerTokenStats.fit(layout, v)
    tok = layout.tokenise(v)
    z = stats.normalise(layout, tok, 0, layout.n_tokens)
    mask = layout.mask(0, layout.n_tokens)
    assert (z[:, ~mask] == 0).all() and torch.isfinite(z).all()
    layers = layout.element_layers(0, layout.n_tokens)
    for i in range(layout.n_layers):
        vals = z[:, layers == i].double()  # pooled over the zoo, so the 0-d tensor too
        assert abs(vals.mean().item()) < 1e-5 and vals.std(unbiased=False).item() == pytest.approx(1, rel=1e-5)
    # the same as normalising the flat vector element by element (a "flat" token spans tensors)
    ids = ParamSpec(tuple(f"t{i}" for i in range(len(SHAPES))), SHAPES).layer_ids()
    ref = ((v.double() - stats.mean[ids]) / stats.std[ids]).float()
    assert torch.allclose(z, layout.tokenise(ref), rtol=1e-5, atol=1e-5)
    # window by window equals the whole, and denormalise inverts it
    a, b = 2, layout.n_tokens - 1
    zw = stats.normalise(layout, tok[:, a:b], a, b)
    assert torch.allclose(zw, z[:, a:b], rtol=1e-6, atol=1e-6)
    back = stats.denormalise(layout, zw, a, b)
    assert torch.allclose(back, tok[:, a:b], rtol=1e-6, atol=1e-5)
    assert (back[:, ~layout.mask(a, b)] == 0).all()
    assert torch.allclose(stats.denormalise(layout, z.double(), 0, layout.n_tokens), tok.double(), rtol=1e-6,
                          atol=1e-5)
    ident = LayerTokenStats.identity(layout)
    assert torch.equal(ident.normalise(layout, tok, 0, layout.n_tokens), tok)
    assert torch.equal(ident.denormalise(layout, tok, 0, layout.n_tokens), tok)


def test_stats_constant_tensor_and_state_dict():
    layout = TokenLayout("flat", 4, ((3, 3), (5,)))
    v = torch.randn(6, 14, generator=torch.Generator().manual_seed(1))
    v[:, 9:] = 0.25  # a constant tensor: std 0
    stats = LayerTokenStats.fit(layout, v)
    assert stats.std[1].item() == 1e-8
    tok = layout.tokenise(v)
    z = stats.normalise(layout, tok, 0, layout.n_tokens)
    assert torch.isfinite(z).all()
    const = layout.element_layers(0, layout.n_tokens) == 1
    assert (z[:, const] == 0).all()
    back = stats.denormalise(layout, z, 0, layout.n_tokens)
    assert (back[:, const] == 0.25).all() and torch.allclose(back, tok, rtol=1e-6, atol=1e-6)
    half = stats.normalise(layout, tok.half(), 0, layout.n_tokens)  # eps underflows in fp16: still finite
    assert torch.isfinite(half).all()
    back = LayerTokenStats.from_state_dict(stats.state_dict())
    assert torch.equal(back.mean, stats.mean) and torch.equal(back.std, stats.std)


def test_stats_errors():
    layout = TokenLayout("layer", 4, ((3, 2), (5,)))
    with pytest.raises(ValueError, match="got 12 parameters.*holds 11"):
        LayerTokenStats.fit(layout, torch.zeros(3, 12))
    with pytest.raises(ValueError, match="no checkpoint"):
        LayerTokenStats.fit(layout, [])
    bad = torch.zeros(2, 11)
    bad[1, 9] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf values in tensor 1"):
        LayerTokenStats.fit(layout, bad)
    stats = LayerTokenStats.identity(TokenLayout("layer", 4, ((11,),)))
    with pytest.raises(ValueError, match="for 1 tensors but the layout has 2"):
        stats.normalise(layout, torch.zeros(4, 4), 0, 4)
    with pytest.raises(ValueError, match="std > 0"):
        LayerTokenStats(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="saved as"):
        LayerTokenStats.from_state_dict({"mean": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 4\) tokens"):
        LayerTokenStats.identity(layout).normalise(layout, torch.zeros(3, 4), 0, 2)


# -- position embedding -------------------------------------------------------------------------------------------
def test_position_embedding_2d():
    layers, toks = torch.meshgrid(torch.arange(40), torch.arange(250), indexing="ij")
    pos = torch.stack([layers.flatten(), toks.flatten()], dim=1)
    emb = position_embedding_2d(pos, 32)
    assert emb.shape == (len(pos), 32) and emb.dtype == torch.float32
    assert torch.unique(emb, dim=0).shape[0] == len(pos)
    # computed per row: a window's rows equal the same rows of the whole table
    assert torch.equal(position_embedding_2d(pos[1000:1010], 32), emb[1000:1010])
    # half the channels depend on the layer only, half on the token only
    same_layer = position_embedding_2d(torch.tensor([[3, 0], [3, 9]]), 32)
    assert torch.equal(same_layer[0, :16], same_layer[1, :16])
    assert not torch.equal(same_layer[0, 16:], same_layer[1, 16:])
    layout = TokenLayout("channel", 16, ((4096, 2500),))
    far = position_embedding_2d(layout.positions(layout.n_tokens - 3, layout.n_tokens), 8)
    assert torch.isfinite(far).all() and far.abs().max() <= 1
    with pytest.raises(ValueError, match="multiple of 4"):
        position_embedding_2d(pos[:2], 30)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        position_embedding_2d(torch.zeros(3, dtype=torch.int64), 8)
    with pytest.raises(ValueError, match="integer"):
        position_embedding_2d(torch.zeros(3, 2), 8)


def test_describe_counts_tokens_and_padding_per_tensor():
    layout = token_layout(ParamSpec(("w", "b"), ((3, 5), (3,))), token_size=4, scheme="layer")
    d = layout.describe(["w", "b"])
    assert list(d.index) == ["w", "b"] and list(d["shape"]) == ["3×5", "3"]
    assert list(d["tokens"]) == [4, 1] and list(d["padding"]) == [1, 1]
    assert d["tokens"].sum() == layout.n_tokens
    flat = token_layout(ParamSpec(("w", "b"), ((3, 5), (3,))), token_size=4, scheme="flat").describe()
    assert flat["padding"].sum() == flat_padding(18, 4)
    with pytest.raises(ValueError, match="one name per tensor"):
        layout.describe(["w"])


def flat_padding(n: int, size: int) -> int:
    """Padded slots of a vector of n values cut into tokens of size."""
    return -(-n // size) * size - n
