"""RPG's parameter tokens: cutting a ParamSpec's flat vector into fixed-size tokens, window by window.

RPG ("Recurrent Diffusion for Large-Scale Parameter Generation") splits a network's parameters into tokens of
``token_size`` values; a recurrent model makes one prototype per token and a small diffusion model generates each
token. Three ways of cutting (the official code's ``granularity``):

* ``"layer"`` (granularity 1): each tensor is flattened, padded to a multiple of the token size and cut; tokens
  never span tensors.
* ``"flat"`` (granularity 0): the whole vector is cut directly; tokens may span tensors, only the end is padded.
* ``"channel"`` (granularity 2): a tensor of ndim >= 2 is split by output channel (row ``x[o]``, ``r`` values).
  Rows of ``r <= token_size`` values are packed ``token_size // r`` whole rows to a token; longer rows are cut into
  ``ceil(r / token_size)`` tokens each, padded per row. 0-d and 1-d tensors are cut as in ``"layer"``.

Models of tens of millions of parameters must be tokenised without any array the size of the model, so a
:class:`TokenLayout` keeps only an O(number of tensors) segment table and computes the flat indices of a token range
on demand. In every scheme a token's real values are a contiguous run of the flat vector (its first ``length``
slots, padding after) and consecutive tokens continue where the previous one stopped, so a window of tokens
``[start, stop)`` covers one contiguous flat range ``flat_range(start, stop)``: a caller can read just that slice
(from disk, say) and tokenise it with :meth:`TokenLayout.tokenise_slice`.

Padding is 0.0 here (RPG pads with NaN and masks it out of the loss: use :meth:`TokenLayout.mask` for that).
:class:`LayerTokenStats` is RPG's per-layer normalisation applied to token windows, and
:func:`position_embedding_2d` the 2-D sinusoidal embedding of (layer, token-within-layer) positions.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from workbench.core.params import ParamSpec

__all__ = ["SCHEMES", "LayerTokenStats", "PositionTokenStats", "TokenLayout", "load_token_stats",
           "position_embedding_2d", "token_layout"]

SCHEMES = ("layer", "flat", "channel")

# LayerTokenStats.fit converts at most this many values to float64 at once, whatever the chunk and tensor sizes.
_FIT_BLOCK = 1 << 22


def _as_int(value: Any, what: str) -> int:
    """``value`` as a Python int (numpy and 0-d torch integers too), or a ValueError naming ``what``."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {type(value).__name__} {value!r:.60}") from None


def _shapes(shapes: Any) -> tuple[tuple[int, ...], ...]:
    """Canonical tuple-of-int-tuples shapes (lists from JSON accepted), checked."""
    if isinstance(shapes, (str, bytes)) or not isinstance(shapes, Iterable):
        raise ValueError(f"a token layout's shapes are a list of tensor shapes, got {shapes!r:.80}")
    out = []
    for s in shapes:
        if isinstance(s, (str, bytes)) or not isinstance(s, Iterable):
            raise ValueError(f"a tensor shape is a list of integers, got {s!r:.80}")
        dims = tuple(_as_int(d, "a tensor dimension") for d in s)
        if any(d < 0 for d in dims):
            raise ValueError(f"a tensor dimension cannot be negative, got shape {dims}")
        out.append(dims)
    if not out:
        raise ValueError("a token layout needs at least one tensor shape")
    return tuple(out)


def _cumsum(counts: Iterable[int]) -> tuple[int, ...]:
    """(0, c0, c0+c1, ...): where each item starts, plus the total."""
    out = [0]
    for c in counts:
        out.append(out[-1] + c)
    return tuple(out)


@dataclass(frozen=True)
class TokenLayout:
    """How a ParamSpec's flat vector is cut into fixed-size tokens (geometry only, JSON-serialisable)."""

    scheme: str
    token_size: int
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown token scheme {self.scheme!r}; choose one of {', '.join(map(repr, SCHEMES))} "
                             "('layer': split by tensor, 'flat': cut the whole vector, 'channel': by output channel)")
        size = _as_int(self.token_size, "token_size")
        if size < 1:
            raise ValueError(f"token_size must be >= 1, got {size}; RPG uses a few hundred to a few thousand values")
        object.__setattr__(self, "token_size", size)
        object.__setattr__(self, "shapes", _shapes(self.shapes))
        numels = tuple(math.prod(s) for s in self.shapes)
        flat_off = _cumsum(numels)
        if flat_off[-1] == 0:
            raise ValueError(f"the shapes {self.shapes} hold no parameter; a layout needs at least one value")
        # The segment table. A segment is a run of tokens cut the same way: `rows` rows of `row_len` values each,
        # every row cut into `per_row` tokens (long rows) or `rows_per` whole rows packed into a token (short rows);
        # one of the two is 1. "layer" is the one-row case of the same rule and "flat" one segment over the whole
        # vector, so index() has a single formula. All O(number of tensors): nothing here grows with the model.
        if self.scheme == "flat":
            segs = [(1, flat_off[-1])]
        else:
            segs = [(s[0], n // s[0]) if self.scheme == "channel" and len(s) >= 2 and n else (1, n)
                    for s, n in zip(self.shapes, numels)]
        rows, row_len, per_row, rows_per, counts = [], [], [], [], []
        for n_rows, r in segs:
            if r == 0:  # an empty tensor: no token, placeholders that are never read (no token maps to it)
                n_rows, r = 0, 1
            m = -(-r // size)  # tokens per row (1 when a row fits in a token)
            k = size // r if m == 1 else 1  # whole rows per token
            rows.append(n_rows)
            row_len.append(r)
            per_row.append(m)
            rows_per.append(k)
            counts.append(n_rows * m if m > 1 else -(-n_rows // k))
        seg_tok_off = _cumsum(counts)
        seg_flat_off = flat_off if self.scheme != "flat" else (0, flat_off[-1])

        def table(values: Iterable[int]) -> torch.Tensor:
            return torch.tensor(list(values), dtype=torch.int64)

        derived = {
            "_numels": numels, "_flat_off": flat_off, "_seg_tok_off": seg_tok_off,
            "_n_tokens": seg_tok_off[-1],
            # small int64 tensors of the same table, for vectorised look-ups of a window's tokens
            "_t_flat_starts": table(flat_off[:-1]), "_t_seg_tok_off": table(seg_tok_off),
            "_t_seg_flat_off": table(seg_flat_off[:-1]), "_t_rows": table(rows), "_t_row_len": table(row_len),
            "_t_per_row": table(per_row), "_t_rows_per": table(rows_per),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    # -- sizes -----------------------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Length of the flat vector."""
        return self._flat_off[-1]

    @property
    def n_tokens(self) -> int:
        """Number of tokens."""
        return self._n_tokens

    @property
    def n_layers(self) -> int:
        """Number of tensors."""
        return len(self.shapes)

    @property
    def numels(self) -> tuple[int, ...]:
        """Element count of each tensor."""
        return self._numels

    def tokens_of_layer(self, layer: int) -> range:
        """Token indices of tensor ``layer`` (for "flat": the tokens holding any of its elements)."""
        layer = _as_int(layer, "layer")
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is out of range: the layout has {self.n_layers} tensors (0..."
                             f"{self.n_layers - 1})")
        if self.scheme != "flat":
            return range(self._seg_tok_off[layer], self._seg_tok_off[layer + 1])
        lo, hi = self._flat_off[layer], self._flat_off[layer + 1]
        first = lo // self.token_size
        return range(first, -(-hi // self.token_size) if hi > lo else first)

    def describe(self, names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per tensor: shape, values, tokens and padded slots (for "flat": the tokens it touches, which
        neighbours share; only the last token of the vector is padded)."""
        names = list(names) if names is not None else [f"tensor {i}" for i in range(self.n_layers)]
        if len(names) != self.n_layers:
            raise ValueError(f"describe needs one name per tensor: {len(names)} names for {self.n_layers} tensors")
        rows = []
        for i, (name, shape, n) in enumerate(zip(names, self.shapes, self.numels)):
            tokens = len(self.tokens_of_layer(i))
            padding = (tokens * self.token_size - n if self.scheme != "flat"
                       else (self.n_tokens * self.token_size - self.n_params if i == self.n_layers - 1 else 0))
            rows.append({"tensor": name, "shape": "×".join(map(str, shape)) or "scalar", "values": n,
                         "tokens": tokens, "padding": padding})
        return pd.DataFrame(rows).set_index("tensor")

    # -- geometry of a window --------------------------------------------------------------------------------
    def _range(self, start: Any, stop: Any) -> tuple[int, int]:
        """Checked [start, stop) (stop None = to the end)."""
        start = _as_int(start, "start")
        stop = self.n_tokens if stop is None else _as_int(stop, "stop")
        if not 0 <= start <= stop <= self.n_tokens:
            raise ValueError(f"token range [{start}, {stop}) is out of bounds: the layout has {self.n_tokens} tokens; "
                             f"use 0 <= start <= stop <= {self.n_tokens}")
        return start, stop

    def _geometry(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per token of [start, stop): (token ids, segment, flat start, number of real values); O(window)."""
        t = torch.arange(start, stop, dtype=torch.int64)
        # the segment holding each token: the last one starting at or before it (empty segments are skipped
        # because the next segment starts at the same token)
        seg = torch.searchsorted(self._t_seg_tok_off, t, right=True) - 1
        j = t - self._t_seg_tok_off[seg]
        m, k, r = self._t_per_row[seg], self._t_rows_per[seg], self._t_row_len[seg]
        row0, part = torch.div(j, m, rounding_mode="floor") * k, j % m
        first = self._t_seg_flat_off[seg] + row0 * r + part * self.token_size
        rows_here = torch.minimum(k, self._t_rows[seg] - row0)
        length = torch.clamp(rows_here * r - part * self.token_size, max=self.token_size)
        return t, seg, first, length

    def flat_range(self, start: int, stop: int) -> tuple[int, int]:
        """The contiguous flat-vector range [lo, hi) covered by tokens [start, stop)."""
        start, stop = self._range(start, stop)
        if start == stop:
            lo = self.n_params if start == self.n_tokens else int(self._geometry(start, start + 1)[2])
            return lo, lo
        first = self._geometry(start, start + 1)[2]
        _, _, last, last_len = self._geometry(stop - 1, stop)
        return int(first), int(last + last_len)

    def index(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, token_size) int64: the flat index of each slot, -1 for padding."""
        start, stop = self._range(start, stop)
        _, _, first, length = self._geometry(start, stop)
        slot = torch.arange(self.token_size, dtype=torch.int64)
        return torch.where(slot < length[:, None], first[:, None] + slot, -1)

    def mask(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, token_size) bool: True where a slot holds a real parameter."""
        start, stop = self._range(start, stop)
        length = self._geometry(start, stop)[3]
        return torch.arange(self.token_size, dtype=torch.int64) < length[:, None]

    def element_layers(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, token_size) int64: the tensor index of each slot, -1 for padding."""
        idx = self.index(start, stop)
        # per slot rather than per token: a "flat" token may span tensors
        layers = torch.searchsorted(self._t_flat_starts, idx.clamp(min=0), right=True) - 1
        return torch.where(idx >= 0, layers, -1)

    def positions(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """(n, 2) int64 (layer index, token index within that layer) of tokens [start, stop).

        For "flat" the layer is that of the token's first element, and the index counts from the first token that
        holds any of that layer's elements."""
        start, stop = self._range(start, stop)
        t, seg, first, _ = self._geometry(start, stop)
        if self.scheme != "flat":  # one segment per tensor
            return torch.stack([seg, t - self._t_seg_tok_off[seg]], dim=1)
        layer = torch.searchsorted(self._t_flat_starts, first, right=True) - 1
        first_token = torch.div(self._t_flat_starts[layer], self.token_size, rounding_mode="floor")
        return torch.stack([layer, t - first_token], dim=1)

    # -- values ----------------------------------------------------------------------------------------------
    def _check_vectors(self, vectors: Any) -> None:
        if not isinstance(vectors, torch.Tensor) or vectors.ndim < 1:
            raise ValueError(f"vectors must be a tensor (N, {self.n_params}) or ({self.n_params},), got "
                             f"{type(vectors).__name__} of shape {tuple(getattr(vectors, 'shape', ()))}")
        if vectors.shape[-1] != self.n_params:
            raise ValueError(f"got {vectors.shape[-1]} parameters, the layout holds {self.n_params}: was it built "
                             "from another ParamSpec?")

    def tokenise(self, vectors: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """(N, n_params) or (n_params,) → tokens [start, stop): (N, stop - start, token_size), padding 0.0."""
        self._check_vectors(vectors)
        start, stop = self._range(start, stop)
        lo, hi = self.flat_range(start, stop)
        return self.tokenise_slice(vectors[..., lo:hi], start, stop)

    def tokenise_slice(self, chunk: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Tokens [start, stop) from ``chunk = vectors[..., lo:hi]``, (lo, hi) = ``flat_range(start, stop)``."""
        start, stop = self._range(start, stop)
        lo, hi = self.flat_range(start, stop)
        if not isinstance(chunk, torch.Tensor) or chunk.ndim < 1 or chunk.shape[-1] != hi - lo:
            got = tuple(chunk.shape) if isinstance(chunk, torch.Tensor) else type(chunk).__name__
            raise ValueError(f"tokens [{start}, {stop}) cover the flat range [{lo}, {hi}) ({hi - lo} values) but the "
                             f"chunk has shape {got}; pass vectors[..., lo:hi] with (lo, hi) = "
                             f"layout.flat_range({start}, {stop})")
        if chunk.is_floating_point() and not torch.isfinite(chunk).all():
            n_nan, n_inf = int(torch.isnan(chunk).sum()), int(torch.isinf(chunk).sum())
            raise ValueError(f"the vectors hold {n_nan} NaN and {n_inf} inf values in flat range [{lo}, {hi}); "
                             "tokenise only finite weights (re-train or drop the diverged checkpoint)")
        idx = self.index(start, stop).to(chunk.device)
        real = idx >= 0
        tokens = chunk[..., (idx - lo).clamp(min=0)]  # padding reads the chunk's first value, then is zeroed
        return tokens.masked_fill(~real, 0)

    def _check_tokens(self, tokens: Any, n: int, what: str) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.ndim < 2 or tuple(tokens.shape[-2:]) != (n, self.token_size):
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"{what} must be (..., {n}, {self.token_size}) tokens, got shape {got}")

    def detokenise(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, n_tokens, token_size) → (N, n_params) (or without N): the exact inverse of tokenise."""
        self._check_tokens(tokens, self.n_tokens, "detokenise's input (all the layout's tokens)")
        return self.detokenise_slice(tokens, 0, self.n_tokens)

    def detokenise_slice(self, tokens: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Tokens [start, stop) (..., stop - start, token_size) → the flat slice vectors[..., lo:hi]."""
        start, stop = self._range(start, stop)
        self._check_tokens(tokens, stop - start, f"tokens [{start}, {stop})")
        lo, hi = self.flat_range(start, stop)
        idx = self.index(start, stop).to(tokens.device)
        real = idx >= 0
        out = tokens.new_empty(tuple(tokens.shape[:-2]) + (hi - lo,))
        # every flat index of [lo, hi) appears in exactly one real slot, so this scatter writes each value once
        out[..., idx[real] - lo] = tokens[..., real]
        return out

    # -- persistence -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view (the sizes are included so a reader can check them)."""
        return {"scheme": self.scheme, "token_size": self.token_size, "shapes": [list(s) for s in self.shapes],
                "n_params": self.n_params, "n_tokens": self.n_tokens}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenLayout:
        """Inverse of :meth:`to_dict` (checked: keys, and the stored sizes against the rebuilt layout)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a token layout dict is a JSON object, got {type(d).__name__}")
        need, known = {"scheme", "token_size", "shapes"}, {"scheme", "token_size", "shapes", "n_params", "n_tokens"}
        if need - set(d) or set(d) - known:
            raise ValueError(f"a token layout dict needs keys {sorted(need)} (optional n_params, n_tokens); "
                             f"missing {sorted(need - set(d))}, unknown {sorted(set(d) - known, key=str)}")
        layout = cls(d["scheme"], d["token_size"], d["shapes"])
        for key in ("n_params", "n_tokens"):
            if key in d and d[key] != getattr(layout, key):
                raise ValueError(f"the token layout dict says {key}={d[key]} but its shapes give "
                                 f"{getattr(layout, key)}; the file is inconsistent — rebuild it from the ParamSpec")
        return layout


def token_layout(spec: ParamSpec, token_size: int, scheme: str = "layer") -> TokenLayout:
    """The token layout of ``spec``'s flat vector: tokens of ``token_size`` values cut by ``scheme``."""
    if not isinstance(spec, ParamSpec):
        raise ValueError(f"token_layout takes a ParamSpec, got {type(spec).__name__}")
    return TokenLayout(scheme, token_size, spec.shapes)


# ---------------------------------------------------------------------------------------------------------------
# Per-layer normalisation of token windows
# ---------------------------------------------------------------------------------------------------------------

def _chunks(vectors: torch.Tensor | Iterable[torch.Tensor]) -> Iterable[torch.Tensor]:
    """A matrix as one chunk, or the chunks of an iterable."""
    if isinstance(vectors, torch.Tensor):
        return (vectors,)
    if isinstance(vectors, (str, bytes, Mapping)) or not isinstance(vectors, Iterable):
        raise ValueError(f"fit takes a tensor (N, n_params) or an iterable of (n_i, n_params) chunks, got "
                         f"{type(vectors).__name__}")
    return vectors


class _SlotStats:
    """Normalisation by a mean and std per slot of a token window (what the statistics give per slot differs)."""

    def _per_slot(self, layout: TokenLayout, tokens: torch.Tensor, start: int,
                  stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def normalise(self, layout: TokenLayout, tokens: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """(x - mean) / std per slot of tokens [start, stop) (..., stop - start, token_size); padding stays 0."""
        mean, std, real = self._per_slot(layout, tokens, start, stop)
        return ((tokens - mean) / std).masked_fill(~real, 0)

    def denormalise(self, layout: TokenLayout, tokens: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """z * std + mean per slot: the inverse of :meth:`normalise` on real slots; padding → 0."""
        mean, std, real = self._per_slot(layout, tokens, start, stop)
        return (tokens * std + mean).masked_fill(~real, 0)


@dataclass
class LayerTokenStats(_SlotStats):
    """Per-tensor mean and std of a zoo, applied to token windows (RPG's per-layer normalisation)."""

    mean: torch.Tensor  # (n_layers,) float64; applied in the tokens' dtype
    std: torch.Tensor  # (n_layers,) float64, > 0

    def __post_init__(self) -> None:
        mean = torch.as_tensor(self.mean).detach().to("cpu", torch.float64).reshape(-1)
        std = torch.as_tensor(self.std).detach().to("cpu", torch.float64).reshape(-1)
        if mean.shape != std.shape or mean.numel() == 0:
            raise ValueError(f"mean and std are one value per tensor, got shapes {tuple(mean.shape)} and "
                             f"{tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("layer statistics must be finite with std > 0; refit them on a finite zoo")
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, layout: TokenLayout, vectors: torch.Tensor | Iterable[torch.Tensor],
            eps: float = 1e-8) -> LayerTokenStats:
        """Fit on (N, n_params) or an iterable of (n_i, n_params) chunks, streamed; std below ``eps`` → ``eps``.

        Statistics are pooled over all checkpoints and all elements of a tensor (population std). Each chunk is
        read tensor by tensor in blocks of at most ``_FIT_BLOCK`` values converted to float64, and merged with
        Chan's parallel update of (count, mean, M2) in float64: no float64 copy of the zoo or of a model is made
        and a stream of chunks gives the statistics of the whole matrix to float64 rounding."""
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        n_layers, offs = layout.n_layers, layout._flat_off
        count, mean, m2 = [0] * n_layers, [0.0] * n_layers, [0.0] * n_layers
        seen = False
        for chunk in _chunks(vectors):
            if not isinstance(chunk, torch.Tensor):
                raise ValueError(f"fit's chunks must be tensors (n_i, {layout.n_params}), got {type(chunk).__name__}")
            if chunk.ndim == 1:
                chunk = chunk[None]
            if chunk.ndim != 2 or chunk.shape[-1] != layout.n_params:
                raise ValueError(f"got {chunk.shape[-1] if chunk.ndim else 0} parameters (chunk shape "
                                 f"{tuple(chunk.shape)}), the layout holds {layout.n_params}: was it built from "
                                 "another ParamSpec?")
            if chunk.shape[0] == 0:
                continue
            seen = True
            cols = max(1, _FIT_BLOCK // chunk.shape[0])
            for layer in range(n_layers):
                for lo in range(offs[layer], offs[layer + 1], cols):
                    block = chunk[:, lo:min(lo + cols, offs[layer + 1])].to(torch.float64)
                    if not torch.isfinite(block).all():
                        raise ValueError(f"the zoo holds NaN or inf values in tensor {layer}; fit statistics on "
                                         "finite weights only (drop the diverged checkpoint)")
                    nb = block.numel()
                    mb = float(block.mean())
                    m2b = float((block - mb).square().sum())
                    na = count[layer]
                    delta = mb - mean[layer]
                    count[layer] = na + nb
                    mean[layer] += delta * nb / count[layer]
                    m2[layer] += m2b + delta * delta * na * nb / count[layer]
        if not seen:
            raise ValueError("fit got no checkpoint (an empty matrix or iterable); pass at least one vector")
        std = [math.sqrt(v / c) if c else 1.0 for v, c in zip(m2, count)]  # an empty tensor: no data, identity
        std_t = torch.tensor(std, dtype=torch.float64).clamp(min=eps)  # constant tensors: eps, not 0 (no inf)
        return cls(torch.tensor(mean, dtype=torch.float64), std_t)

    @classmethod
    def identity(cls, layout: TokenLayout) -> LayerTokenStats:
        """Mean 0 and std 1 for every tensor ("none" normalisation, the ablation)."""
        return cls(torch.zeros(layout.n_layers, dtype=torch.float64), torch.ones(layout.n_layers, dtype=torch.float64))

    def _per_slot(self, layout: TokenLayout, tokens: torch.Tensor, start: int,
                  stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, std, real) per slot of the window, in the tokens' dtype and device."""
        if self.mean.numel() != layout.n_layers:
            raise ValueError(f"these statistics are for {self.mean.numel()} tensors but the layout has "
                             f"{layout.n_layers}; fit them on this layout's zoo")
        start, stop = layout._range(start, stop)
        layout._check_tokens(tokens, stop - start, f"tokens [{start}, {stop})")
        if not tokens.is_floating_point():
            raise ValueError(f"tokens must be floating point to normalise, got {tokens.dtype}")
        layers = layout.element_layers(start, stop).to(tokens.device)
        real = layers >= 0
        layers = layers.clamp(min=0)
        # a std this dtype cannot hold (fp16 underflows below 6e-8) would divide by zero: floor it at the
        # dtype's smallest normal number
        std = self.std.to(tokens.device, tokens.dtype).clamp(min=torch.finfo(tokens.dtype).tiny)
        return self.mean.to(tokens.device, tokens.dtype)[layers], std[layers], real

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to save (float64)."""
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_state_dict(cls, d: Mapping[str, torch.Tensor]) -> LayerTokenStats:
        """Inverse of :meth:`state_dict` (checked)."""
        if not isinstance(d, Mapping) or set(d) != {"mean", "std"}:
            keys = sorted(d) if isinstance(d, Mapping) else type(d).__name__
            raise ValueError(f"layer token statistics are saved as {{'mean', 'std'}}, got {keys}")
        return cls(d["mean"], d["std"])


@dataclass
class PositionTokenStats(_SlotStats):
    """Per-parameter mean and std of a zoo (p-diff's normalisation), applied to token windows.

    For zoos whose members share most of their weights (fine-tunes of one model, dense checkpoints) a per-tensor
    z-score leaves the members' differences tiny next to the shared values, and the generator must reproduce the
    shared model digit for digit; per position, only what varies is left to generate. The statistics are two
    vectors of the model's size (kept in float32): unlike :class:`LayerTokenStats` they grow with the model."""

    mean: torch.Tensor  # (n_params,) float32
    std: torch.Tensor   # (n_params,) float32, > 0

    def __post_init__(self) -> None:
        mean = torch.as_tensor(self.mean).detach().to("cpu", torch.float32).reshape(-1)
        std = torch.as_tensor(self.std).detach().to("cpu", torch.float32).reshape(-1)
        if mean.shape != std.shape or mean.numel() == 0:
            raise ValueError(f"mean and std are one value per parameter, got shapes {tuple(mean.shape)} and "
                             f"{tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("position statistics must be finite with std > 0; refit them on a finite zoo")
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, layout: TokenLayout, vectors: torch.Tensor | Iterable[torch.Tensor],
            eps: float = 1e-8) -> PositionTokenStats:
        """Fit on (N, n_params) or an iterable of chunks, streamed (float64 running sums per position)."""
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        total = torch.zeros(layout.n_params, dtype=torch.float64)
        total_sq = torch.zeros(layout.n_params, dtype=torch.float64)
        shift: torch.Tensor | None = None  # the first member: sums of differences to it keep the variance exact
        n = 0
        for chunk in _chunks(vectors):
            chunk = chunk[None] if chunk.ndim == 1 else chunk
            if chunk.ndim != 2 or chunk.shape[-1] != layout.n_params:
                raise ValueError(f"got chunk shape {tuple(chunk.shape)}, the layout holds {layout.n_params} "
                                 "parameters: was it built from another ParamSpec?")
            if not torch.isfinite(chunk).all():
                raise ValueError("the zoo holds NaN or inf values; fit statistics on finite weights only")
            if len(chunk) == 0:
                continue
            if shift is None:
                shift = chunk[0].to(torch.float64)
            for row in chunk:
                d = row.to(torch.float64) - shift
                total += d
                total_sq += d * d
            n += len(chunk)
        if shift is None:
            raise ValueError("fit got no checkpoint (an empty matrix or iterable); pass at least one vector")
        mean_d = total / n
        var = (total_sq / n - mean_d * mean_d).clamp(min=0)
        return cls((shift + mean_d).float(), var.sqrt().clamp(min=eps).float())

    def _per_slot(self, layout: TokenLayout, tokens: torch.Tensor, start: int,
                  stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.mean.numel() != layout.n_params:
            raise ValueError(f"these statistics are for {self.mean.numel()} parameters but the layout has "
                             f"{layout.n_params}; fit them on this layout's zoo")
        start, stop = layout._range(start, stop)
        layout._check_tokens(tokens, stop - start, f"tokens [{start}, {stop})")
        index = layout.index(start, stop)
        real = index >= 0
        lo, hi = layout.flat_range(start, stop)
        local = (index - lo).clamp(min=0)  # only the window's slice of the statistics is touched
        mean = self.mean[lo:hi][local].to(tokens.device, tokens.dtype)
        std = self.std[lo:hi][local].to(tokens.device, tokens.dtype)
        return mean, std, real.to(tokens.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to save."""
        return {"position_mean": self.mean.clone(), "position_std": self.std.clone()}

    @classmethod
    def from_state_dict(cls, d: Mapping[str, torch.Tensor]) -> PositionTokenStats:
        """Inverse of :meth:`state_dict`."""
        if not isinstance(d, Mapping) or set(d) != {"position_mean", "position_std"}:
            raise ValueError(f"position token statistics are saved as position_mean/position_std, got "
                             f"{sorted(d) if isinstance(d, Mapping) else type(d).__name__}")
        return cls(d["position_mean"], d["position_std"])


def load_token_stats(d: Mapping[str, torch.Tensor]) -> LayerTokenStats | PositionTokenStats:
    """Whichever statistics a saved state dict holds."""
    return PositionTokenStats.from_state_dict(d) if "position_mean" in d else LayerTokenStats.from_state_dict(d)


# ---------------------------------------------------------------------------------------------------------------
# Position embedding
# ---------------------------------------------------------------------------------------------------------------

def position_embedding_2d(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """(n, 2) int (layer, token) → (n, d_model) float32: half the channels sin/cos of the layer, half of the token."""
    d_model = _as_int(d_model, "d_model")
    if d_model < 4 or d_model % 4:
        raise ValueError(f"d_model must be a positive multiple of 4 (sin and cos of two coordinates), got {d_model}")
    if not isinstance(positions, torch.Tensor) or positions.ndim != 2 or positions.shape[1] != 2:
        got = tuple(positions.shape) if isinstance(positions, torch.Tensor) else type(positions).__name__
        raise ValueError(f"positions must be an (n, 2) tensor of (layer, token) indices, got {got}")
    if positions.is_floating_point() or positions.is_complex():
        raise ValueError(f"positions are integer (layer, token) indices, got dtype {positions.dtype}")
    quarter = d_model // 4
    # MAE-style frequencies 1 / 10000^(i / quarter); float64 so token indices in the 100 000s keep their phase
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64, device=positions.device) / quarter)
    angles = positions.to(torch.float64)[:, :, None] * omega  # (n, 2, quarter)
    emb = torch.cat([angles[:, 0].sin(), angles[:, 0].cos(), angles[:, 1].sin(), angles[:, 1].cos()], dim=1)
    return emb.float()
