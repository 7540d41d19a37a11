"""Named configurations: ``ci`` (seconds, used by the tests), ``default`` (the report), and larger ones.

A preset may build on another: ``"extends": "default"`` (a bundled name, or the path of a preset ``.json`` file,
relative to the extending file) lays the file over the resolved parent —

- objects merge key by key, recursively (``"zoos": {"mlp_dense": {"n_members": 50}}`` changes one setting of one
  zoo and keeps the rest);
- anything else (numbers, strings, null, lists) replaces the parent's value whole: a list is never merged;
- the value ``"$delete"`` removes the inherited key (an error if the parent has no such key, so a typo shows);
- ``name`` is never inherited (a preset is named by its own file); ``extends`` itself is not part of the result.

A parent may extend another in turn. A parent that is not a preset, and a chain that comes back to a file already
in it, are ValueErrors naming the file. :func:`merge_presets` is the merge on its own.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from workbench.core.paths import safe_name
from workbench.generator.latent_diffusion import PDiffConfig
from workbench.systems.cond_pdiff.generator import CondPDiffConfig
from workbench.systems.cond_pdiff.style.zoo import StyleZooConfig
from workbench.systems.d2nwg.generator import D2NWGConfig
from workbench.systems.d2nwg.zoo import DatasetZooConfig
from workbench.systems.rpg.generator import RPGConfig
from workbench.systems.rpg.task_zoo import TaskCodeZooConfig
from workbench.zoo.config import ZooConfig
from workbench.zoo.lora.tasks import LoRAZooConfig
from workbench.zoo.lora.text import TextLoRAZooConfig

__all__ = ["Preset", "available_presets", "is_preset_path", "load_preset", "merge_presets", "preset_file",
           "preset_folder"]


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
        return PDiffConfig.from_dict(self.generator_settings(generator).get("config", {}))

    def lora_zoo(self, key: str = "lora_digits"):
        """One LoRA zoo config (Cond P-Diff) by key."""
        return LoRAZooConfig.from_dict(self._entry("lora_zoos", key, "LoRA zoo"))

    def text_lora_zoo(self, key: str = "glue"):
        """One text LoRA zoo config (Cond P-Diff's NLP setting) by key; ``$VARS`` and ``~`` in paths are expanded."""
        d = dict(self._entry("text_lora_zoos", key, "text LoRA zoo"))
        for k in ("model_path", "data_dir"):
            d[k] = os.path.expanduser(os.path.expandvars(d.get(k, "")))
        return TextLoRAZooConfig.from_dict(d)

    def cond_config(self):
        """The Cond P-Diff configuration of this preset."""
        return CondPDiffConfig.from_dict(self.generator_settings("cond_pdiff").get("config", {}))

    def style_zoo(self, key: str = "styles"):
        """One style LoRA zoo config (Cond P-Diff's vision setting) by key."""
        return StyleZooConfig.from_dict(self._entry("style_zoos", key, "style zoo"))

    def style_config(self):
        """The style-image-conditioned generator's configuration (a Cond P-Diff config)."""
        return CondPDiffConfig.from_dict(self.generator_settings("style").get("config", {}))

    def cond_inputs(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """``cond_experiment``'s inputs from ``generators.cond_pdiff``: ``zoo_config`` (its ``zoo``, a LoRA or a text
        LoRA zoo; or ``text_zoo``), ``config``, ``n_samples`` and ``ablation``; ``overrides`` (e.g. the
        ``bench.cond`` section) may name another zoo or ``n_samples``."""
        st = {**self.generator_settings("cond_pdiff"), **(overrides or {})}
        text_key = st.get("text_zoo", st.get("zoo") if st.get("zoo") in self.raw.get("text_lora_zoos", {}) else None)
        zoo = self.text_lora_zoo(text_key) if text_key else self.lora_zoo(st.get("zoo", "lora_digits"))
        return {"zoo_config": zoo, "config": self.cond_config(), "n_samples": int(st.get("n_samples", 20)),
                "ablation": st.get("ablation")}

    def style_inputs(self) -> dict[str, Any]:
        """``style_experiment``'s inputs from ``generators.style``: ``zoo_config``, ``config`` and ``settings``."""
        st = self.generator_settings("style")
        return {"zoo_config": self.style_zoo(st.get("zoo", "styles")), "config": self.style_config(), "settings": st}

    def dataset_zoo(self, key: str = "datasets") -> DatasetZooConfig:
        """One D2NWG dataset zoo config (the meta-dataset) by key."""
        return DatasetZooConfig.from_dict(self._entry("dataset_zoos", key, "dataset zoo"))

    def d2nwg_inputs(self) -> dict[str, Any]:
        """``d2nwg_experiment``'s inputs from ``generators.d2nwg``: ``zoo_config``, ``config`` and the evaluation
        settings (``n_samples``, ``shots``, ``shot_grid``, ``ablations``, ``seen_limit``, ``ablation_seen_limit``,
        ``ablation_steps``, ``finetune_lr``)."""
        st = self.generator_settings("d2nwg")
        out: dict[str, Any] = {"zoo_config": self.dataset_zoo(st.get("zoo", "datasets")),
                               "config": D2NWGConfig.from_dict(st.get("config", {}))}
        optional_int = lambda v: None if v is None else int(v)  # noqa: E731
        for key, cast in (("n_samples", int), ("shots", int), ("shot_grid", tuple), ("ablations", tuple),
                          ("seen_limit", optional_int), ("ablation_seen_limit", optional_int),
                          ("ablation_steps", optional_int), ("finetune_lr", float)):
            if key in st:
                out[key] = cast(st[key])
        return out

    def rpg_parts(self) -> tuple[str, ...]:
        """The RPG experiments this preset runs (``bench.rpg.parts``; every part when it names none)."""
        return tuple(self.bench.get("rpg", {}).get("parts", ("seeds", "tasks", "scale", "largest", "ablations")))

    def rpg_inputs(self) -> dict[str, Any]:
        """``rpg_experiment``'s inputs from ``generators.rpg``: the seeds zoo and its RPG / aligned p-diff configs,
        the task-code zoo and its RPG config, the scale curve's settings and the sample counts."""
        st = self.generator_settings("rpg")
        scale = dict(st.get("scale", {}))
        return {
            "seeds_zoo": ZooConfig.from_dict(st["seeds_zoo"]),
            "config": RPGConfig.from_dict(st.get("config", {})),
            "pdiff_config": (PDiffConfig.from_dict(st["pdiff_config"]) if st.get("pdiff_config") is not None
                             else None),
            "n_samples": int(st.get("n_samples", 50)),
            "task_zoo": TaskCodeZooConfig.from_dict(st.get("task_zoo", {})),
            "task_config": RPGConfig.from_dict(st.get("task_config", {})),
            "n_per_code": int(st.get("n_per_code", 4)),
            "n_seen_eval": int(st.get("n_seen_eval", 50)),
            "largest": ({"zoo": ZooConfig.from_dict(st["largest"]["zoo"]),
                         "config": RPGConfig.from_dict(st["largest"].get("config", {})),
                         "n_samples": int(st["largest"].get("n_samples", 10))} if "largest" in st else None),
            "ablations": st.get("ablations"),
            "capacity": st.get("capacity"),
            # further seeds zoos by key of this preset's zoos (notebook 03's MLP seeds), each with its own p-diff
            "other_seeds": {key: {"zoo": self.zoo(key),
                                  "pdiff_config": (PDiffConfig.from_dict(o["pdiff_config"])
                                                   if o.get("pdiff_config") is not None else None),
                                  "n_samples": int(o.get("n_samples", st.get("n_samples", 50)))}
                            for key, o in st.get("other_seeds", {}).items()},
            "scale": {"sizes": tuple(int(x) for x in scale.get("sizes", ())),
                      "n_members": int(scale.get("n_members", 8)), "steps": int(scale.get("steps", 5)),
                      "budget_mb": float(scale.get("budget_mb", 8192)),
                      "config": RPGConfig.from_dict(scale.get("config", {})),
                      "pdiff_config": PDiffConfig.from_dict(scale.get("pdiff_config", {}))},
        }

    def zoo(self, key: str) -> ZooConfig:
        """One zoo config by key, with a clear error naming the valid keys."""
        if key not in self.zoos:
            raise KeyError(f"preset {self.name!r} has no zoo {key!r}; it has {sorted(self.zoos)}")
        return self.zoos[key]


#: A bundled preset's name (it is also the default folder name under runs/ and reports/).
PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
#: Preset sections whose keys become directory names (``<run>/zoos/<key>``, ...): each must be a JSON object.
NAMED_SECTIONS = ("zoos", "lora_zoos", "text_lora_zoos", "style_zoos", "dataset_zoos", "generators")
#: Other sections that must be JSON objects when present.
OBJECT_SECTIONS = ("bench", "analysis")
#: The key naming the preset a preset extends, and the value that removes an inherited key.
EXTENDS = "extends"
DELETE = "$delete"


def available_presets() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".json"))


def is_preset_path(name_or_path: str | Path) -> bool:
    """A preset given as a file path (it contains a ``/`` or ends ``.json``) rather than a bundled name."""
    s = str(name_or_path)
    return "/" in s or "\\" in s or s.endswith(".json")


def _unknown(name_or_path: object, why: str = "") -> ValueError:
    return ValueError(f"unknown preset {str(name_or_path)!r}{why}; bundled presets: {available_presets()} "
                      "(or pass the path of an existing preset .json file)")


def preset_file(name_or_path: str | Path) -> Path:
    """The file of a preset: a bundled name (``ci``, ``default``, ...) or the path of an existing ``.json`` file.

    Anything else (a name with ``..`` or other characters, a missing file, a path that is not ``.json``) is a
    ValueError listing the bundled presets; nothing outside ``workbench/app/presets/`` is reached by name."""
    if not isinstance(name_or_path, (str, Path)):
        raise _unknown(name_or_path, " (a preset is a name or a path)")
    if is_preset_path(name_or_path):
        p = Path(name_or_path).expanduser()
        if p.suffix != ".json":
            raise _unknown(name_or_path, " (a preset path must end in .json)")
        if not p.is_file():
            raise _unknown(name_or_path, " (no such .json file)")
        return p
    if not PRESET_NAME.fullmatch(name_or_path):
        raise _unknown(name_or_path)
    f = resources.files(__package__) / f"{name_or_path}.json"
    if not f.is_file():
        raise _unknown(name_or_path)
    return Path(str(f))


def preset_folder(name_or_path: str | Path) -> str:
    """The folder name of a preset under ``runs/`` and ``reports/``: the bundled name, or the preset's own
    ``name`` for a preset given as a path (checked as a safe directory name when the preset is loaded)."""
    if not is_preset_path(name_or_path):
        preset_file(name_or_path)  # validates the name
        return str(name_or_path)
    return load_preset(name_or_path).name


def _bad(where: str, problem: str) -> ValueError:
    """Every problem of a preset file is a ValueError naming the file."""
    return ValueError(f"preset {where}{problem}")


def _parse(raw: Any, where: str) -> Preset:
    if not isinstance(raw, dict):
        raise _bad(where, f" must be a JSON object, got {type(raw).__name__}")
    if "name" not in raw:
        raise _bad(where, " has no 'name' (add \"name\": \"<preset name>\")")
    safe_name(raw["name"], f"preset {where}: name", PRESET_NAME, "letters, digits, '_' and '-', starting with a "
              "letter or digit")
    if not isinstance(raw.get("description", ""), str):
        raise _bad(where, ": 'description' must be a string")
    for section in (*NAMED_SECTIONS, *OBJECT_SECTIONS):
        if section in raw and not isinstance(raw[section], dict):
            raise _bad(where, f": section {section!r} must be a JSON object (key -> settings), "
                              f"got {type(raw[section]).__name__}")
    for section in NAMED_SECTIONS:
        for key, value in raw.get(section, {}).items():
            safe_name(key, f"preset {where}: {section} key")
            if not isinstance(value, dict):
                raise _bad(where, f": {section}[{key!r}] must be a JSON object, got {type(value).__name__}")
    zoos = {}
    for k, v in raw.get("zoos", {}).items():
        zoos[k] = ZooConfig.from_dict(v, what=f"preset {where}: zoo {k!r}")
    return Preset(raw["name"], raw.get("description", ""), zoos, raw.get("bench", {}), raw)


def merge_presets(base: dict[str, Any], over: dict[str, Any], *, where: str = "preset",
                  path: str = "") -> dict[str, Any]:
    """``over`` laid over ``base`` (neither changed): objects merge key by key, anything else replaces, and the
    value ``"$delete"`` removes the inherited key (a ValueError naming ``where`` and the key if there is none)."""
    out = dict(base)
    for k, v in over.items():
        key = f"{path}.{k}" if path else str(k)
        if isinstance(v, str) and v == DELETE:
            if k not in out:
                raise ValueError(f"{where}: {key!r} is {DELETE!r} but the preset it extends has no {key!r}")
            del out[k]
        elif isinstance(v, dict):
            # an object over a non-object replaces it; merging into {} still drops (and checks) its "$delete"s
            out[k] = merge_presets(out[k] if isinstance(out.get(k), dict) else {}, v, where=where, path=key)
        else:
            out[k] = v
    return out


def _where(name_or_path: str | Path, f: Path) -> str:
    """How errors name a preset file: its path, or ``<name>.json (bundled)``."""
    return str(f) if is_preset_path(name_or_path) else f"{f.name} (bundled)"


def _read(f: Path, where: str) -> Any:
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"preset {where} is not valid JSON ({e})") from None


def _resolve(raw: Any, f: Path, where: str, chain: tuple[Path, ...]) -> Any:
    """The preset ``raw`` (read from ``f``) laid over the preset it extends, resolved the same way; ``chain``: the
    files already on the way (a cycle back to one is an error)."""
    if not isinstance(raw, dict) or EXTENDS not in raw:
        return raw
    parent = raw[EXTENDS]
    if not isinstance(parent, str) or not parent:
        raise _bad(where, f": {EXTENDS!r} must name a bundled preset or a preset .json file, got {parent!r}")
    if is_preset_path(parent) and not Path(parent).expanduser().is_absolute():
        parent = str(f.parent / parent)  # relative to the extending file, not to the working directory
    try:
        pf = preset_file(parent)
    except ValueError as e:
        raise _bad(where, f": extends {raw[EXTENDS]!r}, which is not a preset: {e}") from None
    if pf.resolve() in chain:
        loop = " -> ".join(p.name for p in (*chain, pf.resolve()))
        raise _bad(where, f": {EXTENDS!r} goes round in a cycle ({loop})")
    pwhere = _where(parent, pf)
    base = _resolve(_read(pf, pwhere), pf, pwhere, (*chain, pf.resolve()))
    if not isinstance(base, dict):
        raise _bad(pwhere, f" (extended by {where}) must be a JSON object, got {type(base).__name__}")
    over = {k: v for k, v in raw.items() if k != EXTENDS}
    merged = merge_presets({k: v for k, v in base.items() if k != "name"}, over, where=f"preset {where}")
    # the name stays the preset's own and stays first, where every preset file has it
    return {"name": over["name"], **merged} if "name" in over else merged


def load_preset(name_or_path: str | Path) -> Preset:
    """Load a bundled preset by name, or a preset JSON file by path (see :func:`preset_file`), with the presets it
    extends resolved (see the module docstring).

    The preset is checked before it is used: valid JSON, a ``name``, sections of the right type, keys that are
    safe directory names (:func:`workbench.core.paths.safe_name`: no ``/``, no ``..``) and zoo configs that build; any
    problem is a ValueError naming the file."""
    f = preset_file(name_or_path)
    where = _where(name_or_path, f)
    return _parse(_resolve(_read(f, where), f, where, (f.resolve(),)), where)
