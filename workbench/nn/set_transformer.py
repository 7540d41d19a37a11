"""Set Transformer blocks (Lee et al. 2019: MAB, SAB, ISAB, PMA) and D2NWG's class-ordered dataset encoder.

D2NWG conditions weight generation on the dataset a network is for. A dataset is a set of classes, each a set of
support examples (backbone features), so the encoder must not depend on the order of the examples inside a class;
but a generated classifier head's row ``c`` must answer class ``c``, so it keeps one embedding per class *in label
order* (equivariant over classes, never pooled over them). :class:`ClassSetEncoder` does this: ISABs over the
examples of each class, a one-seed PMA per class, then SABs across the class vectors of a dataset so each class
embedding knows its neighbours. ``pooling="mean"`` is the ablation "mean-pooled features instead of the Set
Transformer" (no attention at all).

Masks follow one convention throughout: a bool tensor, True = a real element. A padded element (mask False) never
influences a real element's output, whatever value it holds (NaN included): the blocks zero padded keys before
projecting them, because a masked attention weight of exactly 0 still turns a NaN/Inf value into NaN (0 · NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.config import JSONConfig

__all__ = ["POOLINGS", "MAB", "SAB", "ISAB", "PMA", "SetEncoderConfig", "ClassSetEncoder"]

#: The allowed values of :attr:`SetEncoderConfig.pooling`.
POOLINGS = ("set_transformer", "mean")


def _check_mask(mask: torch.Tensor, batch: int, n: int, what: str) -> None:
    """Refuse a mask that is not (batch, n) bool, or that leaves a set with no valid element."""
    if mask.dtype != torch.bool or tuple(mask.shape) != (batch, n):
        raise ValueError(f"{what}: mask must be a bool tensor of shape ({batch}, {n}) (True = valid element), "
                         f"got {mask.dtype} of shape {tuple(mask.shape)}")
    # a set with no valid key has no attention distribution (softmax over nothing is NaN): an error, not a NaN
    if not bool(mask.any(dim=-1).all()):
        raise ValueError(f"{what}: every set needs at least one valid element (mask all False in some row)")


def _zero_padded(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` (B, N, D) with the rows where ``mask`` (B, N) is False set to 0 (no-op without a mask)."""
    return x if mask is None else x.masked_fill(~mask.unsqueeze(-1), 0.0)


def _rff(dim: int) -> nn.Sequential:
    """The row-wise feed-forward layer of the paper (applied to each set element independently)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))


class MAB(nn.Module):
    """Multihead attention block: H = LN(X + Multihead(X, Y, Y)), out = LN(H + rFF(H))."""

    def __init__(self, dim_q: int, dim_kv: int, dim: int, heads: int, layer_norm: bool = True) -> None:
        """Queries of width ``dim_q`` attend to keys/values of width ``dim_kv``; output width ``dim``."""
        super().__init__()
        if dim % heads:
            raise ValueError(f"MAB: dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.to_q = nn.Linear(dim_q, dim)
        # no key bias: it adds q·b_k to every logit of a query alike, which softmax cancels (a parameter with no
        # gradient)
        self.to_k = nn.Linear(dim_kv, dim, bias=False)
        self.to_v = nn.Linear(dim_kv, dim)
        self.to_out = nn.Linear(dim, dim)
        # the residual needs X at width dim; a plain identity where it already is (the paper's usual case)
        self.residual = nn.Identity() if dim_q == dim else nn.Linear(dim_q, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim) if layer_norm else nn.Identity()
        self.norm2 = nn.LayerNorm(dim) if layer_norm else nn.Identity()
        self.rff = _rff(dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from ``x`` (B, Nq, dim_q) to ``y`` (B, Nk, dim_kv); ``mask`` (B, Nk) bool, True = valid key."""
        b, nq, _ = x.shape
        nk = y.shape[1]
        if mask is not None:
            _check_mask(mask, b, nk, "MAB")
            y = _zero_padded(y, mask)

        def split(t: torch.Tensor, n: int) -> torch.Tensor:  # (B, N, dim) -> (B, heads, N, dim / heads)
            return t.view(b, n, self.heads, -1).transpose(1, 2)

        q, k, v = split(self.to_q(x), nq), split(self.to_k(y), nk), split(self.to_v(y), nk)
        # SDPA's bool mask uses the same convention (True = takes part); broadcast over heads and queries
        attn_mask = None if mask is None else mask[:, None, None, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        h = self.norm1(self.residual(x) + self.to_out(a.transpose(1, 2).reshape(b, nq, -1)))
        return self.norm2(h + self.rff(h))


class SAB(nn.Module):
    """Set attention block: SAB(X) = MAB(X, X), O(N²) self-attention, permutation-equivariant."""

    def __init__(self, dim_in: int, dim: int, heads: int) -> None:
        """Map a set of ``dim_in``-vectors to a set of ``dim``-vectors."""
        super().__init__()
        self.mab = MAB(dim_in, dim_in, dim, heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, N, dim_in), ``mask`` (B, N) bool → (B, N, dim); padded rows of the output are 0."""
        return _zero_padded(self.mab(x, x, mask), mask)


class ISAB(nn.Module):
    """Induced set attention block: H = MAB(I, X), out = MAB(X, H), with learned inducing points I; O(N·m)."""

    def __init__(self, dim_in: int, dim: int, heads: int, n_inducing: int) -> None:
        """Map a set of ``dim_in``-vectors to a set of ``dim``-vectors through ``n_inducing`` inducing points."""
        super().__init__()
        # scaled so each point is a roughly unit-norm query; LayerNorm downstream makes the exact scale moot
        self.inducing = nn.Parameter(torch.randn(1, n_inducing, dim) * dim ** -0.5)
        self.mab1 = MAB(dim, dim_in, dim, heads)
        self.mab2 = MAB(dim_in, dim, dim, heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, N, dim_in), ``mask`` (B, N) bool → (B, N, dim); padded rows of the output are 0."""
        # only the first MAB sees X as keys; H summarises the valid elements alone, so padded queries in the
        # second MAB cannot leak into valid rows
        h = self.mab1(self.inducing.expand(x.shape[0], -1, -1), x, mask)
        return _zero_padded(self.mab2(x, h), mask)


class PMA(nn.Module):
    """Pooling by multihead attention: PMA(X) = MAB(S, rFF(X)) with ``n_seeds`` learned seed vectors S."""

    def __init__(self, dim: int, heads: int, n_seeds: int) -> None:
        """Pool a set of ``dim``-vectors into ``n_seeds`` ``dim``-vectors."""
        super().__init__()
        self.seeds = nn.Parameter(torch.randn(1, n_seeds, dim) * dim ** -0.5)
        self.rff = _rff(dim)
        self.mab = MAB(dim, dim, dim, heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, N, dim), ``mask`` (B, N) bool → (B, n_seeds, dim), invariant to the order of the set."""
        return self.mab(self.seeds.expand(x.shape[0], -1, -1), self.rff(x), mask)


@dataclass(frozen=True)
class SetEncoderConfig(JSONConfig, name="set encoder config"):
    """Shape of the class-ordered dataset encoder (``in_features`` = the backbone's feature width)."""

    in_features: int
    dim: int = 128
    heads: int = 4
    n_inducing: int = 16
    n_isab: int = 2                  # ISAB blocks over the examples of one class
    n_cross: int = 1                 # SAB blocks across the class vectors of one dataset
    out_dim: int = 128
    pooling: str = "set_transformer"  # "mean": the ablation, masked mean of the features + MLP, no attention

    def __post_init__(self) -> None:
        for name, low in (("in_features", 1), ("dim", 1), ("heads", 1), ("n_inducing", 1), ("n_isab", 0),
                          ("n_cross", 0), ("out_dim", 1)):
            value = getattr(self, name)
            if value < low:
                raise ValueError(f"set encoder config {name}={value!r}: must be an integer >= {low}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"set encoder config pooling={self.pooling!r}: use one of {POOLINGS}")
        if self.dim % self.heads:
            raise ValueError(f"set encoder config dim={self.dim} must be divisible by heads={self.heads} "
                             f"(e.g. dim={self.dim - self.dim % self.heads or self.heads})")


class ClassSetEncoder(nn.Module):
    """Dataset encoder: (B, C, K, F) support features → (B, C, out_dim), one embedding per class in label order."""

    def __init__(self, cfg: SetEncoderConfig) -> None:
        """Build the Set Transformer (or, with ``pooling="mean"``, the mean-pool MLP) that ``cfg`` describes."""
        super().__init__()
        self.cfg = cfg
        if cfg.pooling == "mean":
            self.mlp = nn.Sequential(nn.Linear(cfg.in_features, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.out_dim))
            return
        self.inp = nn.Linear(cfg.in_features, cfg.dim)
        self.within = nn.ModuleList(ISAB(cfg.dim, cfg.dim, cfg.heads, cfg.n_inducing) for _ in range(cfg.n_isab))
        self.pool = PMA(cfg.dim, cfg.heads, n_seeds=1)
        # no positional encoding across classes: equivariance over classes is what lets row c stay class c's
        # embedding under any relabelling, the label order being carried by the row index alone
        self.across = nn.ModuleList(SAB(cfg.dim, cfg.dim, cfg.heads) for _ in range(cfg.n_cross))
        self.out = nn.Linear(cfg.dim, cfg.out_dim)

    def _check(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Validate ``x`` and ``mask``; return the mask (all True when None)."""
        if x.ndim != 4:
            raise ValueError("ClassSetEncoder expects x of shape (datasets, classes, shots, features), "
                             f"got a {x.ndim}-D tensor of shape {tuple(x.shape)}")
        b, c, k, f = x.shape
        if f != self.cfg.in_features:
            raise ValueError(f"ClassSetEncoder: feature width {f} != in_features={self.cfg.in_features} "
                             f"(x has shape {tuple(x.shape)} = (datasets, classes, shots, features))")
        if c == 0:
            raise ValueError(f"ClassSetEncoder: x has no classes (shape {tuple(x.shape)})")
        if mask is None:
            mask = torch.ones(b, c, k, dtype=torch.bool, device=x.device)
        elif mask.dtype != torch.bool or tuple(mask.shape) != (b, c, k):
            raise ValueError(f"ClassSetEncoder: mask must be a bool tensor of shape {(b, c, k)} "
                             f"(True = a real example), got {mask.dtype} of shape {tuple(mask.shape)}")
        empty = (~mask.any(dim=-1)).nonzero()
        if len(empty):
            d, cls = (int(i) for i in empty[0])
            raise ValueError(f"ClassSetEncoder: class {cls} of dataset {d} has no valid example "
                             f"({len(empty)} empty class(es) in all); every class needs at least one")
        # padded slots are ignored whatever they hold, so only the real examples must be finite
        if not bool(torch.isfinite(x[mask]).all()):
            raise ValueError("ClassSetEncoder: x has NaN or Inf values in valid (mask True) examples")
        return mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embed each class of each dataset: ``x`` (B, C, K, F), ``mask`` (B, C, K) bool → (B, C, out_dim)."""
        mask = self._check(x, mask)
        b, c, k, _ = x.shape
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # so garbage (even NaN) in padded slots cannot reach a sum
        if self.cfg.pooling == "mean":
            counts = mask.sum(dim=-1, keepdim=True).to(x.dtype)
            return self.mlp(x.sum(dim=2) / counts)
        # classes are independent sets here: fold them into the batch
        m = mask.reshape(b * c, k)
        h = self.inp(x.reshape(b * c, k, -1))
        for block in self.within:
            h = block(h, m)
        h = self.pool(h, m).reshape(b, c, -1)
        for block in self.across:
            h = block(h)
        return self.out(h)

    def encode_support(self, features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
        """Embed a flat labelled support set (``features`` (N, F), ``labels`` (N,) in 0..C-1) → (C, out_dim)."""
        if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
            raise ValueError(f"encode_support expects features (N, features) and labels (N,), got shapes "
                             f"{tuple(features.shape)} and {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise ValueError(f"encode_support: labels must be an integer tensor, got {labels.dtype}")
        if n_classes < 1:
            raise ValueError(f"encode_support: n_classes={n_classes} must be >= 1")
        labels = labels.long().to(features.device)
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            raise ValueError(f"encode_support: labels must lie in 0..{n_classes - 1}, got range "
                             f"{int(labels.min())}..{int(labels.max())}")
        counts = torch.bincount(labels, minlength=n_classes)
        missing = (counts == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"encode_support: class {missing[0]} has no support example "
                             f"(classes without examples: {missing})")
        # stable sort keeps each class's examples in their given order; slot = rank within the class
        order = torch.argsort(labels, stable=True)
        sorted_labels = labels[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(labels), device=labels.device) - starts[sorted_labels]
        x = features.new_zeros(1, n_classes, int(counts.max()), features.shape[1])
        mask = torch.zeros(x.shape[:3], dtype=torch.bool, device=features.device)
        x[0, sorted_labels, slot] = features[order]
        mask[0, sorted_labels, slot] = True
        return self(x, mask)[0]
