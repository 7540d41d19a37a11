"""Named configurations: ``ci`` (seconds, used by the tests), ``default`` (the report), and larger ones."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..zoo.config import ZooConfig

__all__ = ["Preset", "load_preset", "available_presets"]


@dataclass(frozen=True)
class Preset:
    """A named configuration: the zoos it collects and per-benchmark settings."""

    name: str
    description: str
    zoos: dict[str, ZooConfig]
    bench: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def _entry(self, section: str, key: str, what: str) -> dict[str, Any]:
        """One named entry of a preset section, with a clear error naming the entries there are."""
        entries = self.raw.get(section, {})
        if key not in entries:
            raise KeyError(f"preset {self.name!r} has no {what} {key!r}; it has {sorted(entries)}")
        return entries[key]

    def generator_settings(self, name: str) -> dict[str, Any]:
        """The preset's settings of one generator (``zoos`` it is fitted on, ``config`` overrides)."""
        gens = self.raw.get("generators", {})
        if name not in gens:
            raise KeyError(f"preset {self.name!r} configures no generator {name!r}; it has {sorted(gens)}")
        return gens[name]

    def pdiff_config(self, generator: str = "pdiff"):
        """The p-diff configuration of one of this preset's generators ("pdiff", "seeds")."""
        from ..generators.pdiff import PDiffConfig

        return PDiffConfig.from_dict(self.generator_settings(generator).get("config", {}))

    def lora_zoo(self, key: str = "lora_digits"):
        """One LoRA zoo config (Cond P-Diff) by key."""
        from ..lora import LoRAZooConfig

        return LoRAZooConfig.from_dict(self._entry("lora_zoos", key, "LoRA zoo"))

    def text_lora_zoo(self, key: str = "glue"):
        """One text LoRA zoo config (Cond P-Diff's NLP setting) by key; ``$VARS`` and ``~`` in paths are expanded."""
        import os

        from ..lora_text import TextLoRAZooConfig

        d = dict(self._entry("text_lora_zoos", key, "text LoRA zoo"))
        for k in ("model_path", "data_dir"):
            d[k] = os.path.expanduser(os.path.expandvars(d.get(k, "")))
        return TextLoRAZooConfig.from_dict(d)

    def cond_config(self):
        """The Cond P-Diff configuration of this preset."""
        from ..generators.cond_pdiff import CondPDiffConfig

        return CondPDiffConfig.from_dict(self.generator_settings("cond_pdiff").get("config", {}))

    def style_zoo(self, key: str = "styles"):
        """One style LoRA zoo config (Cond P-Diff's vision setting) by key."""
        from ..style import StyleZooConfig

        return StyleZooConfig.from_dict(self._entry("style_zoos", key, "style zoo"))

    def style_config(self):
        """The style-image-conditioned generator's configuration (a Cond P-Diff config)."""
        from ..generators.cond_pdiff import CondPDiffConfig

        return CondPDiffConfig.from_dict(self.generator_settings("style").get("config", {}))

    def zoo(self, key: str) -> ZooConfig:
        """One zoo config by key, with a clear error naming the valid keys."""
        if key not in self.zoos:
            raise KeyError(f"preset {self.name!r} has no zoo {key!r}; it has {sorted(self.zoos)}")
        return self.zoos[key]


def available_presets() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".json"))


def load_preset(name_or_path: str | Path) -> Preset:
    """Load a bundled preset by name, or a preset JSON file by path."""
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        raw = json.loads(p.read_text())
    else:
        f = resources.files(__package__) / f"{name_or_path}.json"
        if not f.is_file():
            raise ValueError(f"unknown preset {name_or_path!r}; bundled presets: {available_presets()} "
                             "(or pass the path of a preset .json)")
        raw = json.loads(f.read_text())
    zoos = {k: ZooConfig.from_dict(v) for k, v in raw.get("zoos", {}).items()}
    return Preset(raw["name"], raw.get("description", ""), zoos, raw.get("bench", {}), raw)
