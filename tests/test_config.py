"""The one JSON round trip of every config (``workbench.core.config.JSONConfig``): plain JSON out, the same config
back, unknown keys and wrong types refused with errors that name them, nested configs rebuilt."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from workbench.app.presets import load_preset
from workbench.core.config import JSONConfig, to_json
from workbench.core.diffusion import ScheduleConfig
from workbench.core.train_loop import LoopConfig
from workbench.generator.latent_diffusion import PDiffConfig
from workbench.nn.architectures import ArchConfig
from workbench.nn.autoencoder import AEConfig
from workbench.nn.mlp_denoiser import MLPDenoiserConfig
from workbench.nn.unet1d import UNetConfig
from workbench.systems.cond_pdiff.generator import CondPDiffConfig
from workbench.systems.cond_pdiff.style.network import StyleNetConfig
from workbench.systems.cond_pdiff.style.zoo import StyleZooConfig
from workbench.zoo.config import DataConfig, ZooConfig
from workbench.zoo.lora.tasks import LoRAZooConfig
from workbench.zoo.lora.text import TextLoRAZooConfig
from workbench.zoo.training import TrainConfig

ARCH = ArchConfig("mlp3", (1, 28, 28), 10)
#: One instance of every config class saved as JSON (the classes whose fields have no defaults get small ones).
DEFAULTS: dict[type, JSONConfig] = {
    ScheduleConfig: ScheduleConfig(), LoopConfig: LoopConfig(), ArchConfig: ARCH, AEConfig: AEConfig(100),
    UNetConfig: UNetConfig(4), MLPDenoiserConfig: MLPDenoiserConfig(64), DataConfig: DataConfig(),
    TrainConfig: TrainConfig(), ZooConfig: ZooConfig("z", "seeds", DataConfig(), ARCH, TrainConfig(), 3),
    PDiffConfig: PDiffConfig(), CondPDiffConfig: CondPDiffConfig(), LoRAZooConfig: LoRAZooConfig(),
    TextLoRAZooConfig: TextLoRAZooConfig(), StyleNetConfig: StyleNetConfig(), StyleZooConfig: StyleZooConfig(),
}


def _all_subclasses(cls: type) -> set[type]:
    return {c for s in cls.__subclasses__() for c in (s, *_all_subclasses(s))}


def _preset_configs(name: str) -> list[JSONConfig]:
    """Every config a bundled preset builds (zoos with their parts, generators, LoRA and style zoos)."""
    p = load_preset(name)
    out: list[JSONConfig] = []
    for z in p.zoos.values():
        out += [z, z.data, z.arch, z.train]
    gens = p.raw.get("generators", {})
    out += [p.pdiff_config(g) for g in ("pdiff", "seeds") if g in gens]
    out += [p.cond_config()] if "cond_pdiff" in gens else []
    out += [p.style_config()] if "style" in gens else []
    out += [p.lora_zoo(k) for k in p.raw.get("lora_zoos", {})]
    out += [p.style_zoo(k) for k in p.raw.get("style_zoos", {})]
    return out


CASES = [*DEFAULTS.values(), *_preset_configs("ci"), *_preset_configs("default")]


def test_every_config_dataclass_is_a_json_config():
    assert set(DEFAULTS) <= _all_subclasses(JSONConfig)
    for cls in DEFAULTS:
        assert "to_dict" not in vars(cls) and "from_dict" not in vars(cls), f"{cls.__name__} has its own copy"


@pytest.mark.parametrize("cfg", CASES, ids=lambda c: type(c).__name__)
def test_to_dict_is_plain_json_in_field_order_and_from_dict_gives_the_config_back(cfg):
    d = cfg.to_dict()
    assert list(d) == [f.name for f in dataclasses.fields(cfg)]  # files and fingerprints depend on the order
    assert json.loads(json.dumps(d)) == d  # plain JSON: no tuples, no dataclasses left
    assert type(cfg).from_dict(d) == cfg
    assert type(cfg).from_dict(json.loads(json.dumps(d))) == cfg


def test_nested_configs_are_dicts_and_are_rebuilt():
    cfg = CondPDiffConfig(pdiff=PDiffConfig(ae_channels=(8, 16), schedule=ScheduleConfig(num_steps=10)))
    d = cfg.to_dict()
    assert d["pdiff"]["ae_channels"] == [8, 16] and d["pdiff"]["schedule"]["num_steps"] == 10
    back = CondPDiffConfig.from_dict(d)
    assert isinstance(back.pdiff, PDiffConfig) and isinstance(back.pdiff.schedule, ScheduleConfig)
    assert back.pdiff.ae_channels == (8, 16) and back == cfg
    assert isinstance(StyleZooConfig.from_dict({"base": {"channels": 8}}).base, StyleNetConfig)


@pytest.mark.parametrize("cls", list(DEFAULTS), ids=lambda c: c.__name__)
def test_unknown_keys_are_refused_naming_them_and_the_class(cls):
    d = {**DEFAULTS[cls].to_dict(), "bogus_key": 1, "other": 2}
    with pytest.raises(ValueError, match=r"\['bogus_key', 'other'\]") as e:
        cls.from_dict(d)
    assert cls.__name__ in str(e.value)


@pytest.mark.parametrize("cls, d, match", [
    # the wordings older than the base (saved generators and the robustness cases are matched against them)
    (PDiffConfig, {"depth": 3}, r"^unknown p-diff config keys \['depth'\]"),
    (StyleZooConfig, {"colour": 1}, r"^unknown style zoo keys \['colour'\]"),
    (CondPDiffConfig, {"x": 1}, r"^unknown Cond P-Diff config keys \['x'\]"),
    (LoRAZooConfig, {"x": 1}, r"^unknown LoRA zoo config keys \['x'\] \(LoRAZooConfig\)"),
    (TextLoRAZooConfig, {"x": 1}, r"^unknown text LoRA zoo config keys \['x'\] \(TextLoRAZooConfig\)"),
    (TrainConfig, {"epoch": 1}, r"^train config: unknown keys \['epoch'\]; valid keys \(TrainConfig\)"),
    (CondPDiffConfig, {"pdiff": {"layers": 2}},
     r"unknown keys \['pdiff\.layers'\]; valid keys of pdiff \(PDiffConfig\)"),
    (PDiffConfig, {"ae_train": {"steps": "many"}}, r"p-diff config: ae_train\.steps = 'many'.*an integer"),
    (CondPDiffConfig, {"cond_dropout": "high"}, r"cond_dropout = 'high' is not valid: expected a number"),
    (LoRAZooConfig, {"tasks": "even"}, r"tasks = 'even' is not valid: expected a list"),
    (StyleZooConfig, {"base": {"depth": 1}}, r"style zoo: base: the style network needs depth >= 2"),
    (PDiffConfig, ["pca"], r"p-diff config must be a JSON object of PDiffConfig settings"),
])
def test_bad_dicts_are_one_clear_value_error(cls, d, match):
    with pytest.raises(ValueError, match=match):
        cls.from_dict(d)


def test_what_names_the_source_and_required_keys_come_from_the_class():
    with pytest.raises(ValueError, match=r"^zoo config my\.json: missing required keys \['n_members'\]"):
        ZooConfig.from_dict({"name": "z", "protocol": "seeds", "arch": ARCH.to_dict()}, what="zoo config my.json")
    # data and train have no default in the dataclass but may be left out of the JSON: built from {}
    z = ZooConfig.from_dict({"name": "z", "protocol": "seeds", "arch": ARCH.to_dict(), "n_members": 2})
    assert z.data == DataConfig() and z.train == TrainConfig()


# -- the base on its own ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Inner(JSONConfig, name="inner settings"):
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class _Outer(JSONConfig, name="outer settings", required=("label",)):
    label: str = ""
    inner: _Inner = field(default_factory=_Inner)
    pairs: tuple[tuple[int, int], ...] = ((1, 2),)
    extra: dict[str, Any] = field(default_factory=dict)


def test_the_base_on_a_toy_config():
    cfg = _Outer("a", _Inner((3,)), ((4, 5), (6, 7)), {"t": (1, 2)})
    assert cfg.to_dict() == {"label": "a", "inner": {"sizes": [3]}, "pairs": [[4, 5], [6, 7]], "extra": {"t": [1, 2]}}
    assert to_json(cfg) == cfg.to_dict()
    back = _Outer.from_dict(cfg.to_dict())
    # lists stay lists (the real configs turn them into tuples in __post_init__): the same JSON, the same settings
    assert isinstance(back.inner, _Inner) and back.to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match=r"^outer settings: missing required keys \['label'\]"):
        _Outer.from_dict({})
    with pytest.raises(ValueError, match=r"^outer settings: unknown keys \['inner\.size'\]; valid keys of inner"):
        _Outer.from_dict({"label": "a", "inner": {"size": [1]}})
    with pytest.raises(ValueError, match=r"^here: inner\.sizes = 'x'"):
        _Outer.from_dict({"label": "a", "inner": {"sizes": "x"}}, what="here")
    assert _Inner.config_name() == "inner settings" and LoRAZooConfig.config_name() == "LoRA zoo config"
