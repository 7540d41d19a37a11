"""Causal sequence models that turn RPG's per-token inputs into prototypes, window by window.

RPG ("Recurrent Diffusion for Large-Scale Parameter Generation") splits a network's parameters into T tokens (T can
be 150k) and runs a causal sequence model over per-token input embeddings; a small diffusion model then generates
each token from its prototype. Training runs on windows of consecutive tokens and sampling streams the tokens
window by window, so every model here carries an *exact* state from one window to the next: processing a sequence in
any consecutive windows with the state carried gives the same outputs as one whole-sequence forward, and memory
depends on the window, not on T.

* ``lstm`` / ``gru``: ``nn.LSTM`` / ``nn.GRU``; the state is the recurrent ``(h, c)`` / ``h``.
* ``transformer``: pre-norm blocks with *banded* causal attention (token i sees tokens i - context .. i). The state
  is, per layer, the last ``context`` inputs of that layer — O(context · d_model · n_layers) memory whatever T.
* ``mamba``: ``mamba_ssm.Mamba2`` blocks (the official RPG choice; CUDA only, optional). Its streaming cache API is
  not used, so ``supports_state`` is False: the caller runs the whole sequence as one window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.config import JSONConfig

__all__ = ["KINDS", "SequenceModelConfig", "SequenceModel", "build_sequence_model", "mamba_available"]

KINDS = ("lstm", "gru", "transformer", "mamba")

# Queries of a long window are attended in chunks of at least this many positions: each chunk only needs the keys
# of its own band, so attention memory is O(chunk · (chunk + context)) rather than O(window²).
_QUERY_CHUNK = 256

MAMBA_MISSING = ("kind='mamba' needs the mamba-ssm package (CUDA only): pip install mamba-ssm; "
                 "or use 'lstm', 'gru' or 'transformer'")


@dataclass(frozen=True)
class SequenceModelConfig(JSONConfig, name="sequence model config"):
    """Which causal sequence model turns token inputs into prototypes, and its size."""

    kind: str = "lstm"
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4        # transformer only
    context: int = 64       # transformer only: each token attends to itself and the previous `context` tokens
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown sequence model kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        for name in ("d_model", "n_layers", "n_heads", "context"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.kind == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads} for the transformer")


@cache
def mamba_available() -> bool:
    """Whether ``mamba_ssm`` (with its ``Mamba2`` block) can be imported here."""
    try:
        from mamba_ssm import Mamba2  # noqa: F401
    except Exception:  # noqa: BLE001 — a broken CUDA extension fails with other errors than ImportError
        return False
    return True


def _check_input(x: torch.Tensor, d_model: int) -> None:
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"expected inputs of shape (batch, window, {d_model}), got {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError("empty window: pass at least one token")


class _RNNCore(nn.Module):
    """LSTM or GRU with a residual output projection; the state is the recurrent (h, c) or h."""

    def __init__(self, cfg: SequenceModelConfig) -> None:
        super().__init__()
        rnn = nn.LSTM if cfg.kind == "lstm" else nn.GRU
        # PyTorch only applies dropout between layers (and warns for one layer), so pass it only when it acts
        self.rnn = rnn(cfg.d_model, cfg.d_model, num_layers=cfg.n_layers, batch_first=True,
                       dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        h, state = self.rnn(x, state)
        # the residual keeps the token's own input (its position, its source) visible to the prototype
        return self.norm(x + self.proj(h)), state


class _Block(nn.Module):
    """One pre-norm transformer block whose self-attention is banded: query i sees keys i - context .. i."""

    def __init__(self, cfg: SequenceModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.context, self.dropout = cfg.n_heads, cfg.context, cfg.dropout
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(cfg.dropout)
        # GPT-2's scaling of the residual branches: the residual stream's variance stays O(1) with depth
        for lin in (self.out, self.mlp[-1]):
            nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))
            nn.init.zeros_(lin.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, cached: torch.Tensor) -> torch.Tensor:
        """``x`` (B, W, d): this window's inputs of the block; ``cached`` (B, c0 ≤ context, d): the inputs just
        before it. Keys and values of the cached positions are recomputed from those inputs, which is exact."""
        b, w, d = x.shape
        c0 = cached.shape[1]
        n = self.norm1(torch.cat([cached, x], dim=1))
        q = self._heads(self.q(n[:, c0:]))
        k, v = (self._heads(t) for t in self.kv(n).chunk(2, dim=-1))
        step = max(_QUERY_CHUNK, self.context)
        p = self.dropout if self.training else 0.0
        outs = []
        for s in range(0, w, step):
            e = min(s + step, w)
            k0 = max(0, c0 + s - self.context)  # the first key any query of this chunk can see
            qpos = torch.arange(c0 + s, c0 + e, device=x.device)[:, None]
            kpos = torch.arange(k0, c0 + e, device=x.device)[None, :]
            mask = (kpos <= qpos) & (kpos >= qpos - self.context)  # never an empty row: the diagonal is in it
            outs.append(F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, k0:c0 + e], v[:, :, k0:c0 + e],
                                                        attn_mask=mask, dropout_p=p))
        a = torch.cat(outs, dim=2).transpose(1, 2).reshape(b, w, d)
        x = x + self.drop(self.out(a))
        return x + self.drop(self.mlp(self.norm2(x)))


class _TransformerCore(nn.Module):
    """Banded causal transformer; the state is, per layer, the last ``context`` inputs of that layer."""

    def __init__(self, cfg: SequenceModelConfig) -> None:
        super().__init__()
        self.context = cfg.context
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if state is None:
            state = (x.new_zeros(x.shape[0], 0, x.shape[2]),) * len(self.blocks)
        elif (not isinstance(state, (tuple, list)) or len(state) != len(self.blocks)
              or any(not torch.is_tensor(c) or c.shape[0] != x.shape[0] or c.shape[2] != x.shape[2] for c in state)):
            raise ValueError(f"transformer state must be the {len(self.blocks)} per-layer caches (batch, ≤context, "
                             f"d_model) returned by the previous window of the same batch")
        new = []
        for block, cached in zip(self.blocks, state):
            # the next window's keys for this layer are its last `context` inputs, wherever they came from
            new.append(torch.cat([cached, x], dim=1)[:, -self.context:])
            x = block(x, cached)
        return self.norm(x), tuple(new)


class _MambaCore(nn.Module):
    """A residual stack of ``mamba_ssm.Mamba2`` blocks; whole sequences only (no state across windows)."""

    def __init__(self, cfg: SequenceModelConfig) -> None:
        super().__init__()
        try:
            from mamba_ssm import Mamba2
        except Exception as e:  # noqa: BLE001 — a broken CUDA build is as unusable as a missing package
            raise ImportError(MAMBA_MISSING) from e
        # Mamba2 splits expand · d_model = 2 · d_model into heads of `headdim` (64 by default): take the largest
        # head size up to 64 that divides it, so any d_model builds
        headdim = math.gcd(2 * cfg.d_model, 64)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in range(cfg.n_layers))
        self.layers = nn.ModuleList(Mamba2(d_model=cfg.d_model, headdim=headdim) for _ in range(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, None]:
        if state is not None:
            raise ValueError("kind='mamba' does not carry a state across windows (supports_state is False): "
                             "process the whole sequence as one window with state=None")
        for norm, layer in zip(self.norms, self.layers):
            x = x + self.drop(layer(norm(x)))
        return self.norm(x), None


class SequenceModel(nn.Module):
    """A causal sequence model (B, W, d_model) → (B, W, d_model) that carries its state across windows."""

    def __init__(self, cfg: SequenceModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # mamba's own streaming (inference_params) is not wired in: it would be inference-only and CUDA-only
        self.supports_state: bool = cfg.kind != "mamba"
        if cfg.kind in ("lstm", "gru"):
            self.core: nn.Module = _RNNCore(cfg)
        elif cfg.kind == "transformer":
            self.core = _TransformerCore(cfg)
        else:
            self.core = _MambaCore(cfg)

    def forward(self, x: torch.Tensor, state: object | None = None) -> tuple[torch.Tensor, object]:
        """Process one window; `state` is what the previous window returned (None at the sequence start)."""
        _check_input(x, self.cfg.d_model)
        return self.core(x, state)

    def detach_state(self, state: object) -> object:
        """The same state with every tensor detached (truncated BPTT between windows)."""
        if torch.is_tensor(state):
            return state.detach()
        if isinstance(state, (tuple, list)):
            return type(state)(self.detach_state(s) for s in state)
        return state


def build_sequence_model(cfg: SequenceModelConfig) -> SequenceModel:
    """The sequence model ``cfg`` describes (ImportError for kind='mamba' without mamba-ssm)."""
    return SequenceModel(cfg)
