"""Bad-input cases: cli (see workbench.app.robustness for how a case is classified).

Groups: ``cli`` (arguments of ``python -m workbench``), ``presets`` (preset names and files), ``paths`` (names that
would become paths outside their folder, folders that are files) and ``config`` (zoo config JSON and dicts).

No case may start real work: every input here is refused during validation, and where a regression could let
it through, a second fault stops it before anything is written (``--only 99`` for the report, an unknown zoo or an
unbuildable architecture for a collection), so a regression shows as a wrong message, not as a long run. Cases
whose point is that nothing is written assert it themselves (an AssertionError is classified as a traceback).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench import zoo
from workbench.app.presets import load_preset, preset_folder
from workbench.app.robustness.matrix import Case, cli_case
from workbench.zoo import ZooConfig

REPO = Path(__file__).resolve().parents[3]

#: A zoo config that parses but cannot be collected: its architecture fails before the zoo directory is made,
#: so a preset that uses it can never collect anything, even if the check under test regressed.
_UNBUILDABLE_ZOO = {"name": "never", "protocol": "seeds", "n_members": 2,
                    "data": {"name": "mnist5k", "n_train": 50, "n_test": 20},
                    "arch": {"name": "convnet3", "input_shape": [5], "num_classes": 10},
                    "train": {"epochs": 1, "batch_size": 16, "lr": 0.05}}

#: A valid zoo config (what ``ZooConfig.to_dict`` writes), for the config cases to break one field of.
_ZOO = {"name": "tiny", "protocol": "seeds", "n_members": 2,
        "data": {"name": "mnist5k", "seed": 0, "test_fraction": 0.2, "n_train": 50, "n_test": 20},
        "arch": {"name": "mlp3", "input_shape": [1, 28, 28], "num_classes": 10, "hidden": [8, 8]},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.05}, "select": ["*"], "chunk_size": 2}


def _file(fx: Any, content: Any, name: str = "x.json") -> Path:
    """A file in a fresh case folder (``content``: text, or an object written as JSON)."""
    f = fx.fresh(name.split(".")[0]) / name
    f.write_text(content if isinstance(content, str) else json.dumps(content))
    return f


_DROP = object()  # _zoo(key=_DROP) removes the key


def _zoo(**changes: Any) -> dict[str, Any]:
    d = json.loads(json.dumps(_ZOO))
    for k, v in changes.items():
        if "." in k:
            section, key = k.split(".")
            d[section][key] = v
        elif v is _DROP:
            d.pop(k)
        else:
            d[k] = v
    return d


def _no_write(name: str, group: str, make: Callable[[Any], tuple[list[str], list[Path]]], match: str) -> Case:
    """A CLI case that must also leave every path of ``make(fx)[1]`` uncreated (asserted after the run)."""
    def action(fx: Any) -> tuple[int, str, str]:
        argv, paths = make(fx)
        existed = {p for p in paths if Path(p).exists()}
        result = cli_case(name, group, argv, match).action(fx)
        created = [str(p) for p in paths if Path(p).exists() and p not in existed]
        assert not created, f"the refused command created {created}"
        return result

    return Case(name, group, action, expect=None, match=match, cli=True)


def _config(fx: Any, content: Any, *extra: str) -> list[str]:
    """``zoo collect --config <content as a file> --root <fresh>/zoo``."""
    f = _file(fx, content, "zoo.json")
    return ["zoo", "collect", "--config", str(f), "--root", str(f.parent / "zoo"), *extra]


def _config_case(name: str, content: Any, match: str) -> Case:
    def make(fx: Any) -> tuple[list[str], list[Path]]:
        argv = _config(fx, content)
        return argv, [Path(argv[argv.index("--root") + 1])]

    return _no_write(name, "config", make, match)


def _preset_with_key(section: str, key: str) -> dict[str, Any]:
    raw: dict[str, Any] = {"name": "keys", "zoos": {"ok": _UNBUILDABLE_ZOO}}
    raw[section] = {**raw.get(section, {}), key: _UNBUILDABLE_ZOO if section == "zoos" else {}}
    return raw


def _bad_key_cli(name: str, key: str, escapes_to: Callable[[Path], list[Path]]) -> Case:
    """``zoo collect`` with a preset whose zoo key is ``key``: refused, and nothing made where it points."""
    def make(fx: Any) -> tuple[list[str], list[Path]]:
        f = _file(fx, _preset_with_key("zoos", key), "keys.json")
        run = f.parent / "run"
        return (["zoo", "collect", "--preset", str(f), "--run-dir", str(run), "--quiet"],
                [run, *escapes_to(run)])

    return _no_write(name, "paths", make, r"zoos key .*not a valid name")


def _bad_key_api(name: str, section: str, key: str) -> Case:
    """``load_preset`` on a preset whose ``section`` has the key ``key``: a ValueError, and nothing written."""
    def action(fx: Any) -> Any:
        f = _file(fx, _preset_with_key(section, key), "keys.json")
        before = sorted(fx.root.rglob("*"))
        try:
            return load_preset(str(f))
        finally:
            assert sorted(fx.root.rglob("*")) == before, "loading a preset wrote files"

    return Case(name, "paths", action, expect=ValueError, match=rf"{section} key .*not a valid name")


def _load(arg: Any) -> Callable[[Any], Any]:
    def action(fx: Any) -> Any:
        return load_preset(arg(fx) if callable(arg) else arg)

    return action


def _report_no_folder(name: str, group: str, extra: Callable[[Any, Path], list[str]], match: str,
                      default_folders: tuple[str, ...] = ()) -> Case:
    """``report ... --only 99``-style case: refused, and neither its --out/--run-dir nor the default
    ``reports/<x>``/``runs/<x>`` folders are made."""

    def make(fx: Any) -> tuple[list[str], list[Path]]:
        d = fx.fresh(name)
        paths = [d / "out", d / "run", *(REPO / top / n for n in default_folders for top in ("reports", "runs"))]
        return ["report", *extra(fx, d)], paths

    return _no_write(name, group, make, match)


def _api_config(build: Callable[[], Any], match: str, name: str) -> Case:
    return Case(name, "config", lambda fx: build(), expect=ValueError, match=match)


def _zoo_from_dict(**changes: Any) -> Callable[[], Any]:
    def build() -> Any:
        return ZooConfig.from_dict(_zoo(**changes))

    return build


def _collect_in_fresh_run(*args: str) -> Callable[[Any], tuple[list[str], list[Path]]]:
    """``zoo collect <args> --run-dir <fresh>/run``; the run folder must not be created."""
    def make(fx: Any) -> tuple[list[str], list[Path]]:
        run = fx.fresh("run") / "run"
        return ["zoo", "collect", *args, "--run-dir", str(run)], [run]

    return make


def _collect_with_file_run_dir(below: str) -> Callable[[Any], tuple[list[str], list[Path]]]:
    """``zoo collect --run-dir <a file>[/below]`` (with an unknown ``--zoo`` as the safety net)."""
    def make(fx: Any) -> tuple[list[str], list[Path]]:
        f = _file(fx, "x", "file.txt")
        run = f / below if below else f
        return ["zoo", "collect", "--preset", "ci", "--run-dir", str(run), "--zoo", "nope"], []

    return make


def _config_with_file_root(fx: Any) -> tuple[list[str], list[Path]]:
    """``zoo collect --config <invalid JSON> --root <a file>``: the root is refused first."""
    root = _file(fx, "x", "root.txt")
    return ["zoo", "collect", "--config", str(_file(fx, "{bad json", "zoo.json")), "--root", str(root)], []


def _zoo_module() -> Any:
    return zoo


def _handled_path_preset(fx: Any) -> Any:
    f = _file(fx, {"name": "mine", "zoos": {"tiny": _ZOO}}, "mine.json")
    return load_preset(str(f)), preset_folder(str(f))


CASES: list[Case] = [
    # -- cli: the arguments themselves ---------------------------------------------------------------------
    cli_case("cli_bench_unknown_name", "cli", ["bench", "nope", "--preset", "ci"],
             r"^error: unknown benchmark 'nope'; available: \[.*'zoo'"),
    cli_case("cli_bench_empty_name", "cli", ["bench", ""], r"unknown benchmark ''; available"),
    cli_case("cli_bench_unknown_preset", "cli", ["bench", "zoo", "--preset", "nope"],
             r"unknown preset 'nope'; bundled presets: \[.*'ci'"),
    cli_case("cli_bench_preset_dotdot", "cli", ["bench", "zoo", "--preset", "../../etc/passwd"],
             r"unknown preset '\.\./\.\./etc/passwd'.*bundled presets"),
    cli_case("cli_missing_subcommand", "cli", ["zoo"], r"required"),
    cli_case("cli_unknown_option", "cli", ["report", "--bogus"], r"unrecognized arguments: --bogus"),
    cli_case("cli_seed_not_int", "cli", ["report", "--seed", "abc", "--only", "99"], r"invalid int value: 'abc'"),
    _report_no_folder("cli_report_only_99", "cli",
                      lambda fx, d: ["--preset", "ci", "--only", "99", "--out", str(d / "out"),
                                     "--run-dir", str(d / "run")],
                      r"no notebook .*matches --only \['99'\]; the notebooks are \[.*01_"),
    _report_no_folder("cli_report_only_empty", "cli",
                      lambda fx, d: ["--preset", "ci", "--only", "", "--out", str(d / "out"),
                                     "--run-dir", str(d / "run")],
                      r"--only needs notebook numbers or name prefixes"),
    _report_no_folder("cli_report_unknown_preset_no_default_folders", "cli",
                      lambda fx, d: ["--preset", "no-such-preset", "--only", "99"],
                      r"unknown preset 'no-such-preset'; bundled presets", ("no-such-preset",)),
    _report_no_folder("cli_report_bad_device", "cli",
                      lambda fx, d: ["--preset", "ci", "--device", "gpu", "--only", "99",
                                     "--out", str(d / "out"), "--run-dir", str(d / "run")],
                      r"--device 'gpu' is not a torch device"),
    _report_no_folder("cli_report_empty_device", "cli",
                      lambda fx, d: ["--preset", "ci", "--device", "", "--only", "99",
                                     "--out", str(d / "out"), "--run-dir", str(d / "run")],
                      r"--device '' is not a torch device"),
    _no_write("cli_zoo_collect_unknown_zoo", "cli",
              _collect_in_fresh_run("--preset", "ci", "--zoo", "nonexistent"),
              r"preset 'ci' has no zoo 'nonexistent'; it has \[.*'mlp_dense'"),
    _no_write("cli_zoo_collect_empty_zoo", "cli",
              _collect_in_fresh_run("--preset", "ci", "--zoo", ""),
              r"preset 'ci' has no zoo ''"),
    _no_write("cli_zoo_collect_preset_without_zoos", "cli",
              _collect_in_fresh_run("--preset", "glue"),
              r"preset 'glue' has no zoos to collect"),
    cli_case("cli_zoo_collect_root_without_config", "cli",
             ["zoo", "collect", "--preset", "ci", "--zoo", "nonexistent", "--root", "somewhere"],
             r"--root is the zoo directory for --config; with a preset use --run-dir"),
    # -- presets: names and files ----------------------------------------------------------------------------
    cli_case("presets_cli_unknown", "presets", ["zoo", "collect", "--preset", "huge", "--zoo", "nonexistent"],
             r"unknown preset 'huge'; bundled presets: \[.*'default'"),
    cli_case("presets_cli_empty", "presets", ["zoo", "collect", "--preset", "", "--zoo", "nonexistent"],
             r"unknown preset ''; bundled presets"),
    cli_case("presets_cli_absolute_missing", "presets",
             ["bench", "zoo", "--preset", "/nonexistent/dir/preset.json"],
             r"unknown preset '/nonexistent/dir/preset\.json' \(no such \.json file\)"),
    cli_case("presets_cli_invalid_json", "presets",
             lambda fx: ["zoo", "collect", "--preset", str(_file(fx, "{not json", "p.json")), "--zoo", "x"],
             r"preset .*p\.json is not valid JSON"),
    Case("presets_api_unknown", "presets", _load("huge"), match=r"unknown preset 'huge'; bundled presets"),
    Case("presets_api_dotdot", "presets", _load("../../../etc/passwd"),
         match=r"unknown preset '\.\./\.\./\.\./etc/passwd' \(a preset path must end in \.json\).*bundled"),
    Case("presets_api_dotdot_name", "presets", _load("../../../somewhere/file"), match=r"bundled presets"),
    Case("presets_api_dotdot_alone", "presets", _load(".."), match=r"unknown preset '\.\.'; bundled presets"),
    Case("presets_api_not_a_string", "presets", _load(3), match=r"unknown preset '3' \(a preset is a name"),
    Case("presets_api_absolute_missing", "presets", _load("/nonexistent/dir/preset.json"),
         match=r"no such \.json file"),
    Case("presets_api_invalid_json", "presets", _load(lambda fx: _file(fx, "{not json", "p.json")),
         match=r"preset .*p\.json is not valid JSON"),
    Case("presets_api_without_name", "presets", _load(lambda fx: _file(fx, {"zoos": {}}, "p.json")),
         match=r"preset .*p\.json has no 'name'"),
    Case("presets_api_not_an_object", "presets", _load(lambda fx: _file(fx, [1, 2], "p.json")),
         match=r"preset .*p\.json must be a JSON object"),
    Case("presets_api_zoos_not_an_object", "presets",
         _load(lambda fx: _file(fx, {"name": "x", "zoos": ["a"]}, "p.json")),
         match=r"p\.json: section 'zoos' must be a JSON object"),
    Case("presets_api_bench_not_an_object", "presets",
         _load(lambda fx: _file(fx, {"name": "x", "bench": "fast"}, "p.json")),
         match=r"p\.json: section 'bench' must be a JSON object"),
    Case("presets_api_zoo_entry_not_an_object", "presets",
         _load(lambda fx: _file(fx, {"name": "x", "zoos": {"a": 3}}, "p.json")),
         match=r"p\.json: zoos\['a'\] must be a JSON object"),
    Case("presets_api_name_with_dotdot", "presets",
         _load(lambda fx: _file(fx, {"name": "../x", "zoos": {}}, "p.json")),
         match=r"p\.json: name '\.\./x' is not a valid name"),
    Case("presets_api_bad_zoo_config_names_file_and_key", "presets",
         _load(lambda fx: _file(fx, {"name": "x", "zoos": {"a": _zoo(n_members="six")}}, "p.json")),
         match=r"p\.json: zoo 'a': n_members = 'six' is not valid: expected an integer"),
    Case("presets_api_path_preset_loads", "presets", _handled_path_preset, expect=None,
         check=lambda r, fx: r[0].name == "mine" and list(r[0].zoos) == ["tiny"] and r[1] == "mine"),
    Case("presets_api_bundled_loads", "presets", _load("ci"), expect=None,
         check=lambda p, fx: p.name == "ci" and "mlp_dense" in p.zoos),
    # -- paths: names that would escape, folders that are files ----------------------------------------------
    _bad_key_cli("paths_cli_zoo_key_absolute", "/elsewhere/x", lambda run: [Path("/elsewhere")]),
    _bad_key_cli("paths_cli_zoo_key_dotdot", "../../y", lambda run: [run.parent / "y"]),
    _bad_key_cli("paths_cli_zoo_key_nested", "a/b", lambda run: [run / "zoos" / "a"]),
    _bad_key_cli("paths_cli_zoo_key_dotdot_alone", "..", lambda run: [run / "zoos"]),
    _bad_key_cli("paths_cli_zoo_key_empty", "", lambda run: [run / "zoos"]),
    _bad_key_api("paths_api_zoo_key_absolute", "zoos", "/elsewhere/x"),
    _bad_key_api("paths_api_zoo_key_dotdot", "zoos", "../../y"),
    _bad_key_api("paths_api_lora_key_dotdot", "lora_zoos", "../lora"),
    _bad_key_api("paths_api_style_key_nested", "style_zoos", "a/b"),
    _bad_key_api("paths_api_text_key_hidden", "text_lora_zoos", ".git"),
    _bad_key_api("paths_api_generator_key_dotdot", "generators", ".."),
    _no_write("paths_cli_run_dir_is_file", "paths",
              _collect_with_file_run_dir(""),
              r"--run-dir '.*file\.txt' is a file, not a directory"),
    _no_write("paths_cli_run_dir_under_file", "paths",
              _collect_with_file_run_dir("sub"),
              r"--run-dir .*cannot be created: '.*file\.txt' is a file"),
    cli_case("paths_cli_run_dir_empty", "paths", ["zoo", "collect", "--preset", "ci", "--run-dir", "", "--zoo", "x"],
             r"--run-dir is empty"),
    _report_no_folder("paths_cli_report_out_is_file", "paths",
                      lambda fx, d: ["--preset", "ci", "--only", "99", "--out", str(_file(fx, "x", "out.txt")),
                                     "--run-dir", str(d / "run")],
                      r"report folder \(--out\) '.*out\.txt' is a file, not a directory"),
    _report_no_folder("paths_cli_report_run_dir_is_file", "paths",
                      lambda fx, d: ["--preset", "ci", "--only", "99", "--out", str(d / "out"),
                                     "--run-dir", str(_file(fx, "x", "run.txt"))],
                      r"run folder \(--run-dir\) '.*run\.txt' is a file, not a directory"),
    _report_no_folder("paths_cli_report_out_empty", "paths",
                      lambda fx, d: ["--preset", "ci", "--only", "99", "--out", "", "--run-dir", str(d / "run")],
                      r"report folder \(--out\) is empty"),
    # -- config: zoo config JSON through the CLI and from_dict --------------------------------------------------
    cli_case("config_cli_nonexistent", "config",
             lambda fx: ["zoo", "collect", "--config", str(fx.fresh("nx") / "missing.json"), "--root", "z"],
             r"--config '.*missing\.json' does not exist"),
    cli_case("config_cli_is_directory", "config",
             lambda fx: ["zoo", "collect", "--config", str(fx.fresh("dir")), "--root", "z"],
             r"--config '.*' is not a file"),
    cli_case("config_cli_empty", "config", ["zoo", "collect", "--config", "", "--root", "z"],
             r"--config is empty"),
    cli_case("config_cli_without_root", "config",
             lambda fx: ["zoo", "collect", "--config", str(_file(fx, _ZOO, "zoo.json"))],
             r"--config needs --root"),
    cli_case("config_cli_with_zoo_flag", "config",
             lambda fx: ["zoo", "collect", "--config", str(_file(fx, _ZOO, "zoo.json")), "--root", "z",
                         "--zoo", "mlp_dense"],
             r"--zoo selects zoos of a preset; it cannot be combined with --config"),
    _no_write("config_cli_root_is_file", "config",
              _config_with_file_root,
              r"--root '.*root\.txt' is a file, not a directory"),
    cli_case("config_cli_root_empty", "config",
             lambda fx: ["zoo", "collect", "--config", str(_file(fx, "{bad json", "zoo.json")), "--root", ""],
             r"--root is empty"),
    _config_case("config_cli_invalid_json", "{\"name\": \"tiny\",", r"--config .*zoo\.json is not valid JSON"),
    _config_case("config_cli_not_an_object", [1, 2], r"zoo config .*must be a JSON object of ZooConfig settings"),
    _config_case("config_cli_without_arch", _zoo(arch=_DROP), r"missing required keys \['arch'\]"),
    _config_case("config_cli_without_name", _zoo(name=_DROP), r"missing required keys \['name'\]"),
    _config_case("config_cli_n_members_six", _zoo(n_members="six"),
                 r"n_members = 'six' is not valid: expected an integer"),
    _config_case("config_cli_n_members_zero", _zoo(n_members=0), r"n_members must be >= 1, got 0"),
    _config_case("config_cli_n_members_true", _zoo(n_members=True),
                 r"n_members = True is not valid: expected an integer"),
    _config_case("config_cli_n_members_float", _zoo(n_members=2.5),
                 r"n_members = 2\.5 is not valid: expected an integer"),
    _config_case("config_cli_unknown_top_key", _zoo(n_member=4), r"unknown keys \['n_member'\]; valid keys"),
    _config_case("config_cli_unknown_data_key", _zoo(**{"data.n_trian": 10}),
                 r"zoo config .*zoo\.json: unknown keys \['data\.n_trian'\]; valid keys of data"),
    _config_case("config_cli_unknown_train_key", _zoo(**{"train.epoch": 1}),
                 r"unknown keys \['train\.epoch'\]; valid keys of train"),
    _config_case("config_cli_unknown_arch_key", _zoo(**{"arch.widths": [8]}), r"unknown keys \['arch\.widths'\]; valid keys of arch"),
    _config_case("config_cli_unknown_arch_name", _zoo(**{"arch.name": "vgg"}), r"zoo\.json: arch: unknown architecture 'vgg'"),
    _config_case("config_cli_unknown_protocol", _zoo(protocol="dense"), r"unknown protocol 'dense'; choose one of"),
    _config_case("config_cli_unknown_dataset", _zoo(**{"data.name": "mnist9"}), r"zoo\.json: data: unknown dataset 'mnist9'"),
    _config_case("config_cli_lr_string", _zoo(**{"train.lr": "0.1"}), r"zoo\.json: train\.lr = '0\.1' is not valid: expected a number"),
    _config_case("config_cli_select_string", _zoo(select="fc2.*"),
                 r"select = 'fc2\.\*' is not valid: expected a list"),
    _config_case("config_cli_hidden_strings", _zoo(**{"arch.hidden": ["8", "8"]}),
                 r"arch\.hidden = \['8', '8'\] is not valid: expected a list \(each an integer\)"),
    _config_case("config_cli_data_not_object", _zoo(data="mnist5k"), r"data = 'mnist5k' is not valid: expected an object"),
    _api_config(_zoo_from_dict(**{"train.batch_size": 0}), r"zoo config: train: invalid training config: batch_size must be >= 1, got 0", "config_api_batch_size_zero"),
    _api_config(_zoo_from_dict(**{"data.test_fraction": 1.5}), r"test_fraction must be between 0 and 1",
                "config_api_test_fraction"),
    _api_config(_zoo_from_dict(**{"arch.num_classes": "10"}), r"arch\.num_classes = '10' is not valid: expected an integer",
                "config_api_num_classes_string"),
    _api_config(lambda: _zoo_module().ArchConfig.from_dict({"name": "mlp3"}),
                r"arch config: missing required keys \['input_shape', 'num_classes'\]", "config_api_arch_missing"),
    _api_config(lambda: _zoo_module().TrainConfig.from_dict({"epochs": "2"}),
                r"train config: epochs = '2' is not valid: expected an integer", "config_api_train_epochs_string"),
    Case("config_api_valid_round_trip", "config",
         lambda fx: _zoo_module().ZooConfig.from_dict(_ZOO), expect=None,
         check=lambda cfg, fx: cfg.to_dict()["n_members"] == 2 and cfg.arch.hidden == (8, 8)),
]
