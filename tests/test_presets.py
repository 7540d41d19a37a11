"""Every bundled preset loads and every config in it parses; preset names and keys never escape their folders."""

import json

import pytest

from workbench.app.bench import BENCHMARKS
from workbench.app.presets import available_presets, load_preset, merge_presets, preset_file, preset_folder
from workbench.core.paths import check_output_dir, safe_name
from workbench.generator.latent_diffusion import PDiffConfig
from workbench.systems.cond_pdiff.generator import CondPDiffConfig
from workbench.systems.d2nwg.generator import D2NWGConfig
from workbench.systems.d2nwg.zoo import DatasetZooConfig
from workbench.systems.rpg.generator import RPGConfig
from workbench.systems.rpg.task_zoo import TaskCodeZooConfig
from workbench.zoo import ZooConfig

BUNDLED = ["ci", "default", "glue", "resnet-bn", "rpg-full"]


def test_the_bundled_presets_are_the_expected_ones():
    assert set(BUNDLED) <= set(available_presets())


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_preset_loads_and_every_config_parses(name):
    p = load_preset(name)
    assert p.name == name and preset_folder(name) == name
    for key, cfg in p.zoos.items():
        assert isinstance(cfg, ZooConfig)
        assert ZooConfig.from_dict(cfg.to_dict()) == cfg  # the JSON round trip the zoo directory relies on
    gens = p.raw.get("generators", {})
    for key in gens:
        if key in ("pdiff", "seeds"):
            assert isinstance(p.pdiff_config(key), PDiffConfig)
        elif key == "cond_pdiff":
            assert isinstance(p.cond_config(), CondPDiffConfig)
        elif key == "style":
            assert isinstance(p.style_config(), CondPDiffConfig)
            if "config" in gens[key].get("continuous", {}):
                CondPDiffConfig.from_dict(gens[key]["continuous"]["config"])
        elif key == "d2nwg":
            inputs = p.d2nwg_inputs()
            assert isinstance(inputs["config"], D2NWGConfig)
            assert isinstance(inputs["zoo_config"], DatasetZooConfig)
            assert DatasetZooConfig.from_dict(inputs["zoo_config"].to_dict()) == inputs["zoo_config"]
        elif key == "rpg":
            inputs = p.rpg_inputs()
            assert isinstance(inputs["config"], RPGConfig) and isinstance(inputs["task_config"], RPGConfig)
            assert isinstance(inputs["seeds_zoo"], ZooConfig) and isinstance(inputs["task_zoo"], TaskCodeZooConfig)
            assert RPGConfig.from_dict(inputs["config"].to_dict()) == inputs["config"]
        else:
            pytest.fail(f"preset {name}: generator {key!r} has no config accessor")
    for key in p.raw.get("lora_zoos", {}):
        assert p.lora_zoo(key) is not None
    for key in p.raw.get("dataset_zoos", {}):
        assert p.dataset_zoo(key) is not None
    for key in p.raw.get("style_zoos", {}):
        assert p.style_zoo(key) is not None
    for key in p.raw.get("text_lora_zoos", {}):
        assert p.text_lora_zoo(key) is not None


@pytest.mark.parametrize("name", BUNDLED)
def test_every_reference_of_a_preset_exists(name):
    p = load_preset(name)
    raw = p.raw
    zoos = set(p.zoos)
    task_zoos = set(raw.get("lora_zoos", {})) | set(raw.get("style_zoos", {})) | set(raw.get("dataset_zoos", {}))
    text_zoos = set(raw.get("text_lora_zoos", {}))
    for bench, settings in p.bench.items():
        assert bench in BENCHMARKS, f"{name}: bench section {bench!r} names no benchmark"
        if "zoo" in settings:
            assert settings["zoo"] in zoos | task_zoos, f"{name}: bench {bench} zoo {settings['zoo']!r}"
        if "text_zoo" in settings:
            assert settings["text_zoo"] in text_zoos, f"{name}: bench {bench} text_zoo {settings['text_zoo']!r}"
        if bench in ("pdiff", "seeds", "analysis"):  # these fit p-diff generators configured in the preset
            assert ("pdiff" if bench == "analysis" else bench) in raw.get("generators", {})
        if bench == "cond":
            assert "cond_pdiff" in raw.get("generators", {})
    for gen, settings in raw.get("generators", {}).items():
        for z in settings.get("zoos", []):
            assert z in zoos, f"{name}: generator {gen} zoo {z!r}"
        if "zoo" in settings:
            assert settings["zoo"] in task_zoos | text_zoos, f"{name}: generator {gen} zoo {settings['zoo']!r}"
    analysis = raw.get("analysis", {})
    for z in [*analysis.get("zoos", []), *([analysis["ablation_zoo"]] if "ablation_zoo" in analysis else [])]:
        assert z in zoos, f"{name}: analysis zoo {z!r}"


# -- names that become paths ---------------------------------------------------------------------------------
def _write(tmp_path, raw, name="custom.json"):
    f = tmp_path / name
    f.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return f


def _mini(**zoos):
    zoo = load_preset("ci").zoos["mlp_seeds"].to_dict()
    return {"name": "custom", "zoos": {k: zoo for k in zoos} if zoos else {"mine": zoo}}


def test_a_preset_given_as_a_path_loads(tmp_path):
    f = _write(tmp_path, _mini())
    p = load_preset(str(f))
    assert p.name == "custom" and list(p.zoos) == ["mine"]
    assert load_preset(f).name == "custom"
    assert preset_folder(str(f)) == "custom"


@pytest.mark.parametrize("key", ["../../y", "/elsewhere/x", "a/b", "..", "", ".hidden", "a..b", "x\\y"])
@pytest.mark.parametrize("section", ["zoos", "lora_zoos", "text_lora_zoos", "style_zoos", "generators"])
def test_a_preset_key_that_is_not_a_plain_name_is_refused(tmp_path, key, section):
    raw = _mini()
    raw[section] = {**raw.get(section, {}), key: raw["zoos"]["mine"] if section == "zoos" else {}}
    f = _write(tmp_path, raw)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=rf"{section} key .*not a valid name"):
        load_preset(str(f))
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["../../../etc/passwd", "../../../somewhere/file", "/etc/passwd", "..", "ci/..",
                                  "", "huge", "ci ", "/nonexistent/preset.json", "c*"])
def test_a_preset_name_outside_the_presets_folder_is_refused(name):
    with pytest.raises(ValueError, match="bundled presets"):
        load_preset(name)


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ({"zoos": {}}, "has no 'name'"),
    ([1, 2], "must be a JSON object"),
    ({"name": "x", "zoos": [1]}, "section 'zoos' must be a JSON object"),
    ({"name": "x", "bench": "fast"}, "section 'bench' must be a JSON object"),
    ({"name": "x", "zoos": {"a": 3}}, r"zoos\['a'\] must be a JSON object"),
    ({"name": "../x", "zoos": {}}, "name .*not a valid name"),
    ({"name": "x", "zoos": {"a": {"name": "a", "protocol": "seeds"}}}, r"zoo 'a'.*missing required keys"),
])
def test_a_malformed_preset_is_a_value_error_naming_the_file(tmp_path, content, match):
    f = _write(tmp_path, content)
    with pytest.raises(ValueError, match=match) as e:
        load_preset(str(f))
    assert str(f) in str(e.value)


def test_safe_name_and_check_output_dir(tmp_path):
    assert safe_name("mlp_dense", "zoo") == "mlp_dense" and safe_name("v1.2-x", "zoo") == "v1.2-x"
    for bad in ("", "..", "a/b", "/x", "../y", ".x", "a..b", None, 3):
        with pytest.raises(ValueError, match="not a valid name"):
            safe_name(bad, "zoo key")
    f = tmp_path / "file"
    f.write_text("x")
    assert check_output_dir(None, "--out") is None
    assert check_output_dir(tmp_path / "new" / "dir", "--out") == tmp_path / "new" / "dir"
    assert not (tmp_path / "new").exists()
    for bad, match in ((f, "is a file"), (f / "sub", "cannot be created"), ("", "is empty")):
        with pytest.raises(ValueError, match=match):
            check_output_dir(bad, "--out")


# -- inheritance: "extends" ----------------------------------------------------------------------------------
def test_ci_extends_default_and_holds_only_what_differs():
    ci_file = json.loads(preset_file("ci").read_text())
    assert ci_file["extends"] == "default" and "analysis" in ci_file
    ci, default = load_preset("ci"), load_preset("default")
    assert "extends" not in ci.raw and ci.raw["name"] == "ci" and next(iter(ci.raw)) == "name"
    # what ci does not state comes from default: the depth study, the zoos' architectures
    assert ci.raw["analysis"]["depth"] == default.raw["analysis"]["depth"] and "depth" not in ci_file["analysis"]
    assert ci.zoos["mlp_dense"].arch == default.zoos["mlp_dense"].arch
    assert ci.zoos["mlp_dense"].n_members == 50 and default.zoos["mlp_dense"].n_members == 200
    assert ci.raw["generators"]["pdiff"]["config"]["ae_channels"] == [16, 32, 64, 64]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_presets_resolve_to_plain_presets(tmp_path, name):
    """Every bundled preset resolves (no "extends" and no "$delete" left) and loads the same written out whole."""
    p = load_preset(name)
    text = json.dumps(p.raw)
    assert '"extends"' not in text and "$delete" not in text
    whole = load_preset(str(_write(tmp_path, p.raw)))
    assert whole.raw == p.raw and whole.zoos == p.zoos


def test_merge_rules():
    base = {"a": {"x": 1, "y": [1, 2], "z": {"deep": 1, "keep": 2}}, "b": [1, 2, 3], "c": "text", "d": None}
    over = {"a": {"y": [9], "z": {"deep": 5}, "new": 0}, "b": [4], "c": "$delete", "e": {"f": 1}, "d": {"g": 1}}
    merged = merge_presets(base, over)
    assert merged == {"a": {"x": 1, "y": [9], "z": {"deep": 5, "keep": 2}, "new": 0}, "b": [4], "d": {"g": 1},
                      "e": {"f": 1}}
    assert list(merged) == ["a", "b", "d", "e"]  # the parent's order, new keys after it
    assert base["a"]["z"] == {"deep": 1, "keep": 2} and base["c"] == "text"  # the inputs are not changed
    assert merge_presets({"a": {"x": 1}}, {"a": 3}) == {"a": 3}  # a scalar replaces an object
    assert merge_presets({"a": 3}, {"a": {"x": 1}}) == {"a": {"x": 1}}  # and an object a scalar
    with pytest.raises(ValueError, match=r"'a\.nope' is '\$delete' but the preset it extends has no 'a\.nope'"):
        merge_presets(base, {"a": {"nope": "$delete"}})


def test_a_preset_file_extends_a_bundled_one_and_can_delete(tmp_path):
    f = _write(tmp_path, {"name": "small", "extends": "ci",
                          "zoos": {"mlp_seeds": {"n_members": 4}, "resnet_bn": "$delete", "resnet_bn_lowlr": "$delete"},
                          "generators": {"pdiff": {"zoos": ["mlp_dense"]}}})
    p = load_preset(str(f))
    ci = load_preset("ci")
    assert p.name == "small" and p.description == ci.description
    assert list(p.zoos) == ["mlp_dense", "mlp_seeds"] and p.zoos["mlp_seeds"].n_members == 4
    assert p.zoos["mlp_seeds"].data == ci.zoos["mlp_seeds"].data
    assert p.raw["generators"]["pdiff"]["zoos"] == ["mlp_dense"]
    assert p.raw["generators"]["pdiff"]["config"] == ci.raw["generators"]["pdiff"]["config"]
    # a chain through a file, relative to the extending file
    g = _write(tmp_path, {"name": "smaller", "extends": "custom.json", "zoos": {"mlp_dense": {"n_members": 3}}},
               name="smaller.json")
    f.rename(tmp_path / "custom.json")
    q = load_preset(str(g))
    assert q.zoos["mlp_dense"].n_members == 3 and q.zoos["mlp_seeds"].n_members == 4


def test_the_name_is_not_inherited(tmp_path):
    f = _write(tmp_path, {"extends": "ci"})
    with pytest.raises(ValueError, match="has no 'name'"):
        load_preset(str(f))


def test_an_extends_cycle_is_refused(tmp_path):
    _write(tmp_path, {"name": "a", "extends": "b.json"}, name="a.json")
    _write(tmp_path, {"name": "b", "extends": "a.json"}, name="b.json")
    with pytest.raises(ValueError, match=r"b\.json: 'extends' goes round in a cycle \(a\.json -> b\.json -> a\.json\)"):
        load_preset(str(tmp_path / "a.json"))
    _write(tmp_path, {"name": "c", "extends": "c.json"}, name="c.json")
    with pytest.raises(ValueError, match=r"cycle \(c\.json -> c\.json\)"):
        load_preset(str(tmp_path / "c.json"))


@pytest.mark.parametrize("parent, match", [
    ("nonexistent", r"extends 'nonexistent', which is not a preset: unknown preset 'nonexistent'; bundled presets"),
    ("../ci", r"extends '\.\./ci', which is not a preset"),
    ("missing.json", r"extends 'missing\.json', which is not a preset.*no such \.json file"),
    (3, r"'extends' must name a bundled preset or a preset \.json file, got 3"),
    ("", r"'extends' must name a bundled preset"),
])
def test_an_unknown_parent_is_refused_naming_the_file(tmp_path, parent, match):
    f = _write(tmp_path, {"name": "x", "extends": parent})
    with pytest.raises(ValueError, match=match) as e:
        load_preset(str(f))
    assert str(f) in str(e.value)


def test_a_broken_parent_is_named(tmp_path):
    _write(tmp_path, "{not json", name="broken.json")
    f = _write(tmp_path, {"name": "x", "extends": "broken.json"})
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        load_preset(str(f))
