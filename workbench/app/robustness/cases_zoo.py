"""Bad-input cases: zoo storage (damaged, missing and altered shards; repair; resume), ParamSpec and normalisers,
and interrupted collections (see workbench.app.robustness for how a case is classified)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from workbench.app.robustness.fixtures import DENSE, SEEDS
from workbench.app.robustness.matrix import Case, cli_case
from workbench.core.io import CorruptFileError
from workbench.core.normalise import PositionNormaliser, TaskNormaliser, make_normaliser
from workbench.core.params import ParamSpec, ParamSpecError
from workbench.zoo import DataConfig, Zoo, collect
from workbench.zoo.storage import repair_zoo

__all__ = ["CASES", "edit_json", "flip_byte", "run_python", "truncate", "unseal"]


# -- small helpers shared by the case files -----------------------------------------------------------------------
def flip_byte(path: Path, offset: int = -5) -> Path:
    """Flip every bit of one byte (default: near the end, inside the tensor data)."""
    b = bytearray(path.read_bytes())
    b[offset] ^= 0xFF
    path.write_bytes(bytes(b))
    return path


def truncate(path: Path, keep: int | None = None) -> Path:
    """Cut a file to ``keep`` bytes (default: half)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return path


def run_python(code: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run Python code in a child process (for cases that kill a run on purpose)."""
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def _shard(root: Path, k: int = 1) -> Path:
    return sorted((root / "shards").glob("shard-*.safetensors"))[k]


def _zoo(root: Path):
    return Zoo(root)


def _damaged(damage, match: str, name: str, zoo_kind: str = "dense") -> Case:
    """Open a zoo whose second shard was damaged: a clear error naming it; nothing on disk changes."""
    state: dict[str, Path] = {}

    def action(fx: Any) -> Any:
        return _zoo(state["root"])

    def guard(fx: Any) -> list[Path]:
        state["root"] = fx.zoo_copy(zoo_kind)
        damage(state["root"])
        return [state["root"]]

    # CorruptFileError for shards and JSON, ParamSpecError for an inconsistent spec.json: both are ValueErrors
    return Case(name, "zoo-corrupt", action, expect=ValueError, match=match, guard=guard)


def edit_json(path: Path, change) -> Path:
    """Change a JSON file in place (``change`` mutates the parsed object)."""
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))
    return path


def unseal(marker: Path) -> Path:
    """Make a saved generator look like one written before saves recorded checksums (no ``files``, no
    ``config_sha256`` in its marker file), so that the checks behind the checksums run; returns the folder."""
    edit_json(marker, lambda m: (m.pop("files", None), m.pop("config_sha256", None)))
    return marker.parent


def _restored(fx: Any, zoo_kind: str, damage, repair: bool, lost: tuple[int, ...] = (2, 3)) -> bool:
    """Damage a copy, (repair,) re-collect: every member back, bit-identical to the untouched zoo."""
    root = fx.zoo_copy(zoo_kind)
    damage(root)
    if repair:
        report = repair_zoo(root)
        assert report["members_to_recollect"] == list(lost), report
        assert len(list((root / "quarantine").rglob("*.safetensors"))) == 1  # moved aside, not deleted
    zoo = collect(DENSE if zoo_kind == "dense" else SEEDS, root, progress=False)
    return zoo.complete and torch.equal(zoo.vectors(), _zoo(fx.dense_zoo if zoo_kind == "dense" else fx.seeds_zoo).vectors())


def _collect_refuses(fx: Any) -> Any:
    return collect(DENSE, fx._refuse_root, progress=False)


def _refuse_guard(fx: Any) -> list[Path]:
    fx._refuse_root = fx.zoo_copy("dense")
    flip_byte(_shard(fx._refuse_root))
    return [fx._refuse_root]


def _interrupted_collection(fx: Any) -> bool:
    """Kill a dense collection right after its first shard (before the trajectory state is saved), then resume."""
    root = fx.fresh("killed") / "zoo"
    code = ("from workbench.zoo import collect; from workbench.app.robustness.fixtures import DENSE; "
            f"collect(DENSE, {str(root)!r}, progress=False)")
    proc = run_python(code, env={"WORKBENCH_FAULT": "after_shard:1"})
    assert proc.returncode == 17, proc.stderr[-500:]
    zoo = collect(DENSE, root, progress=False)
    return zoo.complete and torch.equal(zoo.vectors(), _zoo(fx.dense_zoo).vectors())


def _model(fx: Any):
    return _zoo(fx.dense_zoo).model()


_SPEC = ParamSpec(("a.weight", "a.bias"), ((2, 3), (2,)))

CASES: list[Case] = [
    # -- damaged shards: reported with their members, never deleted --------------------------------------------
    _damaged(lambda r: flip_byte(_shard(r)), r"shard-000002-000003.*checksum.*members \[2, 3\]",
             "zoo-shard-one-byte-flipped"),
    _damaged(lambda r: truncate(_shard(r)), r"shard-000002-000003.*checksum", "zoo-shard-truncated"),
    _damaged(lambda r: _shard(r).write_bytes(b""), r"shard-000002-000003.*checksum", "zoo-shard-zero-bytes"),
    _damaged(lambda r: flip_byte(_shard(r), 3), r"checksum.*zoo repair", "zoo-shard-bad-header"),
    _damaged(lambda r: _shard(r).unlink(), r"shard-000002-000003.*missing.*members \[2, 3\].*collect",
             "zoo-shard-deleted"),
    _damaged(lambda r: _shard(r, 0).unlink(), r"missing.*members \[0, 1\]", "zoo-first-shard-deleted"),
    _damaged(lambda r: ((r / "checksums.json").unlink(), truncate(_shard(r))),
             r"shard-000002-000003.*unreadable", "zoo-legacy-shard-truncated"),
    _damaged(lambda r: ((r / "checksums.json").unlink(), _shard(r).write_bytes(b"\x00" * 16)),
             r"unreadable", "zoo-legacy-shard-garbage"),
    _damaged(lambda r: flip_byte(_shard(r, 0)), r"checksum", "seeds-zoo-shard-flipped", "seeds"),
    _damaged(lambda r: _shard(r, 1).unlink(), r"missing.*members \[2, 3\]", "seeds-zoo-shard-deleted",
             "seeds"),
    _damaged(lambda r: (r / "config.json").write_text("{not json"), r"config\.json.*not valid JSON",
             "zoo-config-json-corrupt"),
    _damaged(lambda r: (r / "spec.json").write_text('{"names": ['), r"spec\.json.*not valid JSON",
             "zoo-spec-json-corrupt"),
    _damaged(lambda r: edit_json(r / "spec.json", lambda d: d.pop("shapes")),
             r"spec\.json.*needs 'names' and 'shapes'", "zoo-spec-json-no-shapes"),
    _damaged(lambda r: edit_json(r / "spec.json", lambda d: d["shapes"][0].__setitem__(0, -3)),
             r"spec\.json.*negative", "zoo-spec-json-negative-shape"),
    _damaged(lambda r: edit_json(r / "spec.json", lambda d: d.__setitem__("numel", 5)),
             r"spec\.json.*numel=5", "zoo-spec-json-wrong-numel"),
    _damaged(lambda r: (r / "checksums.json").write_text("["),
             r"checksums\.json.*not valid JSON", "zoo-checksums-json-corrupt"),
    Case("zoo-no-config", "zoo-corrupt", lambda fx: _zoo(fx.fresh("empty")), expect=FileNotFoundError,
         match=r"not a zoo directory.*collect"),
    Case("zoo-garbage-manifest-is-rebuilt", "zoo-corrupt",
         lambda fx: (lambda r: ((r / "manifest.csv").write_text("\x00garbage,,\n1"), _zoo(r))[1])(fx.zoo_copy()),
         expect=None, check=lambda z, fx: len(z) == 6 and torch.equal(z.vectors(), _zoo(fx.dense_zoo).vectors())),
    Case("zoo-collect-refuses-damaged-shard", "zoo-corrupt", _collect_refuses, expect=CorruptFileError,
         match=r"checksum.*zoo repair.*quarantine", guard=_refuse_guard),
    # -- restoring members: repair moves aside, re-collection restores, for every protocol -----------------------
    Case("zoo-dense-lost-shard-recollected", "zoo-restore",
         lambda fx: _restored(fx, "dense", lambda r: _shard(r).unlink(), repair=False), expect=None,
         check=lambda ok, fx: ok),
    Case("zoo-dense-first-shard-lost-recollected", "zoo-restore",
         lambda fx: _restored(fx, "dense", lambda r: _shard(r, 0).unlink(), repair=False, lost=[0, 1]),
         expect=None, check=lambda ok, fx: ok),
    Case("zoo-dense-damaged-shard-repaired-and-recollected", "zoo-restore",
         lambda fx: _restored(fx, "dense", lambda r: flip_byte(_shard(r)), repair=True), expect=None,
         check=lambda ok, fx: ok),
    Case("zoo-seeds-lost-shard-recollected", "zoo-restore",
         lambda fx: _restored(fx, "seeds", lambda r: _shard(r).unlink(), repair=False), expect=None,
         check=lambda ok, fx: ok),
    Case("zoo-seeds-damaged-shard-repaired-and-recollected", "zoo-restore",
         lambda fx: _restored(fx, "seeds", lambda r: truncate(_shard(r)), repair=True), expect=None,
         check=lambda ok, fx: ok),
    Case("zoo-repair-on-healthy-zoo-changes-nothing", "zoo-restore",
         lambda fx: repair_zoo(fx._healthy),
         expect=None, check=lambda r, fx: r["ok"] and not r["moved_aside"],
         guard=lambda fx: [setattr(fx, "_healthy", fx.zoo_copy()) or fx._healthy]),
    Case("zoo-repair-not-a-zoo", "zoo-restore",
         lambda fx: repair_zoo(fx.fresh("nozoo")),
         expect=FileNotFoundError, match=r"not a zoo directory"),
    Case("zoo-collection-killed-after-a-shard-resumes", "interrupted", _interrupted_collection, expect=None,
         check=lambda ok, fx: ok),
    # -- the zoo API ----------------------------------------------------------------------------------------------
    Case("zoo-model-index-too-large", "zoo-api", lambda fx: _zoo(fx.dense_zoo).model(99), expect=IndexError,
         match=r"has 6 members.*member=99"),
    Case("zoo-model-index-too-negative", "zoo-api", lambda fx: _zoo(fx.dense_zoo).model(-7), expect=IndexError,
         match=r"has 6 members"),
    Case("zoo-model-index-a-string", "zoo-api", lambda fx: _zoo(fx.dense_zoo).model("3"), expect=IndexError,
         match=r"member='3'"),
    Case("zoo-model-negative-index-works", "zoo-api", lambda fx: _zoo(fx.dense_zoo).model(-1), expect=None,
         check=lambda m, fx: torch.equal(_zoo(fx.dense_zoo).spec.flatten(m), _zoo(fx.dense_zoo).vectors()[-1])),
    Case("zoo-collect-into-other-zoo", "zoo-api",
         lambda fx: collect(
             DENSE.with_(n_members=7), fx._other,
             progress=False),
         expect=ValueError, match=r"different config.*another directory",
         guard=lambda fx: [setattr(fx, "_other", fx.zoo_copy()) or fx._other]),
    Case("zoo-collect-other-selection", "zoo-api",
         lambda fx: collect(
             DENSE.with_(select=("fc3.*",)),
             fx._other2, progress=False),
         expect=ValueError, match=r"different config",
         guard=lambda fx: [setattr(fx, "_other2", fx.zoo_copy()) or fx._other2]),
    Case("zoo-collect-unknown-dataset-writes-nothing", "zoo-api",
         lambda fx: (lambda root: (collect(
             DENSE.with_(
                 data=DataConfig(name="wine")), root,
             progress=False)))(fx.fresh("wine") / "zoo"),
         expect=ValueError, match=r"unknown dataset 'wine'.*choose one of"),
    Case("zoo-collect-unknown-dataset-left-no-folder", "zoo-api",
         lambda fx: (lambda root: (_try(lambda: collect(
             DENSE.with_(
                 data=DataConfig(name="wine")), root,
             progress=False)), root.exists())[1])(fx.fresh("wine2") / "zoo"),
         expect=None, check=lambda exists, fx: exists is False),
    # -- ParamSpec ------------------------------------------------------------------------------------------------
    Case("spec-select-string-not-list", "spec", lambda fx: ParamSpec.select(_model(fx), "fc2.*"),
         expect=ParamSpecError, match=r"list of patterns.*\['fc2\.\*'\]"),
    Case("spec-select-invalid-regex", "spec", lambda fx: ParamSpec.select(_model(fx), ["re:fc[2"]),
         expect=ParamSpecError, match=r"not a valid regular expression"),
    Case("spec-select-exclude-invalid-regex", "spec", lambda fx: ParamSpec.select(_model(fx), ["*"], ["re:(("]),
         expect=ParamSpecError, match=r"exclude.*not a valid regular expression"),
    Case("spec-select-pattern-matches-nothing", "spec", lambda fx: ParamSpec.select(_model(fx), ["fc2.*", "fc9.*"]),
         expect=ParamSpecError, match=r"'fc9\.\*' matches no tensor"),
    Case("spec-select-nothing-left", "spec", lambda fx: ParamSpec.select(_model(fx), ["fc2.*"], ["fc2.*"]),
         expect=ParamSpecError, match=r"select no tensor.*Available names"),
    Case("spec-select-empty-include", "spec", lambda fx: ParamSpec.select(_model(fx), []),
         expect=ParamSpecError, match=r"non-empty list"),
    Case("spec-select-pattern-not-a-string", "spec", lambda fx: ParamSpec.select(_model(fx), [3]),
         expect=ParamSpecError, match=r"holds 3"),
    Case("spec-negative-shape", "spec", lambda fx: ParamSpec(("w",), ((-10,),)), expect=ParamSpecError,
         match=r"negative"),
    Case("spec-shape-not-integers", "spec", lambda fx: ParamSpec(("w",), (("a",),)), expect=ParamSpecError,
         match=r"lists of non-negative integers"),
    Case("spec-names-shapes-differ", "spec", lambda fx: ParamSpec(("w", "b"), ((2,),)), expect=ParamSpecError,
         match=r"2 names but 1 shapes"),
    Case("spec-duplicate-name", "spec", lambda fx: ParamSpec(("w", "w"), ((2,), (2,))), expect=ParamSpecError,
         match=r"twice"),
    Case("spec-names-a-string", "spec", lambda fx: ParamSpec("w", ((2,),)), expect=ParamSpecError,
         match=r"names are a list of non-empty strings"),
    Case("spec-flatten-other-architecture", "spec", lambda fx: _SPEC.flatten(_model(fx)), expect=ParamSpecError,
         match=r"lacks 2 tensors.*different architecture"),
    Case("spec-flatten-wrong-shape", "spec",
         lambda fx: _SPEC.flatten({"a.weight": torch.zeros(3, 2), "a.bias": torch.zeros(2)}), expect=ParamSpecError,
         match=r"'a\.weight' has shape \(3, 2\).*expects \(2, 3\)"),
    Case("spec-flatten-nan-weights", "spec",
         lambda fx: _SPEC.flatten({"a.weight": torch.full((2, 3), float("nan")), "a.bias": torch.zeros(2)}),
         expect=ParamSpecError, match=r"6 NaN.*unusable"),
    Case("spec-load-into-nan-vector", "spec",
         lambda fx: _zoo(fx.dense_zoo).spec.load_into(_model(fx), torch.full((_zoo(fx.dense_zoo).spec.numel,), float("inf"))),
         expect=ParamSpecError, match=r"inf values"),
    Case("spec-load-into-wrong-length", "spec",
         lambda fx: _zoo(fx.dense_zoo).spec.load_into(_model(fx), torch.zeros(7)), expect=ParamSpecError,
         match=r"shape \(7,\) does not fit.*P = "),
    Case("spec-load-into-batch", "spec",
         lambda fx: _zoo(fx.dense_zoo).spec.load_into(_model(fx), _zoo(fx.dense_zoo).vectors()), expect=ParamSpecError,
         match=r"takes one vector"),
    Case("spec-unflatten-3d", "spec", lambda fx: _SPEC.unflatten(torch.zeros(2, 2, 8)), expect=ParamSpecError,
         match=r"expected \(P,\) or \(N, P\) with P = 8"),
    Case("spec-zoo-vectors-roundtrip", "spec",
         lambda fx: (lambda z: z.spec.flatten_batch(z.spec.unflatten(z.vectors())))(_zoo(fx.dense_zoo)),
         expect=None, check=lambda v, fx: torch.equal(v, _zoo(fx.dense_zoo).vectors())),
    # -- normalisers ----------------------------------------------------------------------------------------------
    Case("normaliser-unknown-kind", "normaliser", lambda fx: make_normaliser("zscore"), expect=ValueError,
         match=r"unknown normaliser 'zscore'.*position"),
    Case("normaliser-layer-without-spec", "normaliser", lambda fx: make_normaliser("layer"), expect=ValueError,
         match=r"needs the ParamSpec"),
    Case("normaliser-wrong-length", "normaliser",
         lambda fx: PositionNormaliser().fit(torch.randn(4, 5)).transform(torch.randn(2, 6)), expect=ParamSpecError,
         match=r"fitted on P=5.*length 6"),
    Case("normaliser-before-fit", "normaliser", lambda fx: PositionNormaliser().transform(torch.randn(2, 3)),
         expect=RuntimeError, match=r"before fit"),
    Case("normaliser-fit-nan", "normaliser",
         lambda fx: PositionNormaliser().fit(torch.tensor([[1.0, float("nan")], [0.0, 1.0]])), expect=ParamSpecError,
         match=r"1 NaN"),
    Case("normaliser-task-unseen-id", "normaliser",
         lambda fx: TaskNormaliser().fit(torch.randn(4, 3), torch.tensor([0, 0, 1, 1])).transform(
             torch.randn(2, 3), torch.tensor([5, 5])), expect=ParamSpecError, match=r"task ids \[5\] were not seen"),
    Case("normaliser-task-without-groups", "normaliser", lambda fx: TaskNormaliser().fit(torch.randn(4, 3)),
         expect=ParamSpecError, match=r"needs the task id"),
    Case("normaliser-constant-position-roundtrip", "normaliser",
         lambda fx: (lambda x: PositionNormaliser().fit(x).inverse(PositionNormaliser().fit(x).transform(x)))(
             torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 5.0]])),
         expect=None, check=lambda y, fx: torch.allclose(y, torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 5.0]]))),
]


def _try(f) -> None:
    try:
        f()
    except Exception:  # noqa: BLE001 — the case only looks at what was left on disk
        pass


def _cli_zoo(fx: Any, verb: str) -> list[str]:
    root = fx.zoo_copy()
    flip_byte(_shard(root))
    fx._cli_root = root
    return ["zoo", verb, str(root)]


CASES += [
    cli_case("cli-zoo-verify-damaged-shard", "zoo-corrupt", lambda fx: _cli_zoo(fx, "verify"),
             r"shard-000002-000003.*checksum.*zoo repair"),
    cli_case("cli-zoo-verify-not-a-zoo", "zoo-corrupt", lambda fx: ["zoo", "verify", str(fx.fresh("nz"))],
             r"not a zoo directory"),
    cli_case("cli-zoo-repair-not-a-zoo", "zoo-restore", lambda fx: ["zoo", "repair", str(fx.fresh("nz2"))],
             r"not a zoo directory"),
]
