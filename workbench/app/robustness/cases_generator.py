"""Bad-input cases: saved generators (tampered, incomplete, mixed), fitting (bad data, run directories that hold
another run, bad loop configs), interrupted training and interrupted saves (see workbench.app.robustness)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from workbench.app.robustness.cases_zoo import edit_json, flip_byte, run_python, truncate, unseal
from workbench.app.robustness.matrix import Case
from workbench.core.io import CorruptFileError
from workbench.core.params import ParamSpecError
from workbench.core.train_loop import LoopConfig, RunDirMismatchError
from workbench.generator.latent_diffusion import PDiff, PDiffConfig, fit_or_load
from workbench.zoo import Zoo

__all__ = ["CASES"]


def _pdiff():
    return PDiff


def _pdiff_config():
    return PDiffConfig


def _zoo(fx: Any):
    return Zoo(fx.dense_zoo)


def _tampered(name: str, damage, expect, match: str) -> Case:
    """Load a saved p-diff generator after ``damage(copy)``: a clear error; the files stay as they were."""
    state: dict[str, Path] = {}

    def guard(fx: Any) -> list[Path]:
        state["d"] = fx.pdiff_copy()
        damage(state["d"])
        return [state["d"]]

    return Case(name, "generator-files", lambda fx: _pdiff().load(state["d"]), expect=expect, match=match, guard=guard)


def _legacy(d: Path) -> None:
    """Make a save look like one written before checksums (no ``files``, no ``config_sha256``)."""
    unseal(d / "pdiff.json")


def _same_samples(gen: Any, fx: Any) -> bool:
    return torch.equal(gen.sample(3, seed=5), fx.pdiff.sample(3, seed=5))


def _swap_weights(d: Path, fx: Any) -> None:
    """Put the weights of a differently shaped generator into ``d`` (a folder that mixes two generators)."""
    other = _pdiff()(replace(fx.pdiff_config, unet_channels=4, ae_channels=(4, 4),
                             ae_train=LoopConfig(steps=2, batch_size=6), diffusion_train=LoopConfig(steps=2, batch_size=6))
                     ).fit(_zoo(fx), progress=False)
    tmp = fx.fresh("other")
    other.save(tmp)
    for f in ("autoencoder_weights.safetensors", "denoiser_weights.safetensors"):
        shutil.copy(tmp / f, d / f)


def _mixed(fx: Any) -> Path:
    fx._mixed = fx.pdiff_copy()
    _legacy(fx._mixed)
    _swap_weights(fx._mixed, fx)
    return fx._mixed


def _fit(fx: Any, vectors=None, run_dir=None, config=None, **kw):
    cfg = config or fx.pdiff_config
    return _pdiff()(cfg).fit(_zoo(fx) if vectors is None else vectors, run_dir=run_dir, progress=False, **kw)


def _run_dir(fx: Any) -> Path:
    """A run directory holding a finished fit of the fixture config on the dense zoo."""
    if not hasattr(fx, "_run_dir"):
        fx._run_dir = fx.fresh("run_dir")
        _fit(fx, run_dir=fx._run_dir)
    return fx._run_dir


def _interrupted_fit(fx: Any) -> bool:
    """Kill a fit between two checkpoints (step 15 of the autoencoder's 30, checkpoints every 10), then resume:
    the resumed generator samples exactly what an uninterrupted one does."""
    rd = fx.fresh("killed_fit")
    cfg = fx.pdiff_config
    code = ("from workbench.zoo import Zoo; from workbench.generator.latent_diffusion import PDiff; "
            "from workbench.app.robustness.fixtures import Fixtures; import sys; "
            f"PDiff(Fixtures({str(fx.root)!r}).pdiff_config).fit(Zoo({str(fx.dense_zoo)!r}), run_dir={str(rd)!r}, "
            "progress=False)")
    proc = run_python(code, env={"WORKBENCH_FAULT": "train_step:15"})
    assert proc.returncode == 17, proc.stderr[-800:]
    assert (rd / "autoencoder.safetensors").exists() and not (rd / "diffusion.safetensors").exists()
    gen = _pdiff()(cfg).fit(_zoo(fx), run_dir=rd, progress=False)
    return _same_samples(gen, fx)


def _interrupted_save(fx: Any) -> Any:
    """Kill a save half-way through publishing over an older save: the folder then holds no generator at all
    (load says so), never a mix of old and new files."""
    d = fx.pdiff_copy()
    code = ("from workbench.generator.latent_diffusion import PDiff; "
            f"g = PDiff.load({str(fx.pdiff_dir)!r}); g.seconds = {{'edited': 1.0}}; g.save({str(d)!r})")
    proc = run_python(code, env={"WORKBENCH_FAULT": "publish:3"})
    assert proc.returncode == 17, proc.stderr[-800:]
    return _pdiff().load(d)


def _file_target(fx: Any) -> Path:
    p = fx.fresh("file") / "generator"
    p.write_text("not a folder")
    return p


CASES: list[Case] = [
    # -- saved generators: tampered, incomplete, mixed -------------------------------------------------------------
    _tampered("gen-config-schedule-edited",
              lambda d: edit_json(d / "pdiff.json", lambda m: m["config"]["schedule"].__setitem__("num_steps", 500)),
              CorruptFileError, r"pdiff\.json.*config was edited"),
    _tampered("gen-config-normaliser-kind-edited",
              lambda d: edit_json(d / "pdiff.json", lambda m: m["config"].__setitem__("normaliser", "layer")),
              CorruptFileError, r"config was edited"),
    _tampered("gen-config-ae-channels-edited",
              lambda d: edit_json(d / "pdiff.json", lambda m: m["config"].__setitem__("ae_channels", [16, 16])),
              CorruptFileError, r"config was edited"),
    _tampered("gen-pdiff-json-corrupt", lambda d: (d / "pdiff.json").write_text("{\"config\": "), CorruptFileError,
              r"pdiff\.json is not valid JSON"),
    _tampered("gen-pdiff-json-missing", lambda d: (d / "pdiff.json").unlink(), FileNotFoundError,
              r"no saved p-diff generator.*pdiff\.json is missing"),
    _tampered("gen-pdiff-json-no-config", lambda d: edit_json(d / "pdiff.json", lambda m: m.pop("config")),
              CorruptFileError, r"pdiff\.json is not a valid saved generator.*config"),
    _tampered("gen-pdiff-json-latent-shape-text",
              lambda d: (_legacy(d), edit_json(d / "pdiff.json", lambda m: m.__setitem__("latent_shape", "four"))),
              CorruptFileError, r"not a valid saved generator"),
    _tampered("gen-pdiff-json-unknown-config-key",
              lambda d: (_legacy(d), edit_json(d / "pdiff.json", lambda m: m["config"].__setitem__("depth", 3))),
              CorruptFileError, r"unknown p-diff config keys \['depth'\]"),
    _tampered("gen-normaliser-json-kind-changed",
              lambda d: edit_json(d / "normaliser.json", lambda m: m.__setitem__("kind", "none")), CorruptFileError,
              r"normaliser\.json was altered"),
    _tampered("gen-normaliser-stats-flipped", lambda d: flip_byte(d / "normaliser.safetensors"), CorruptFileError,
              r"normaliser\.safetensors was altered"),
    _tampered("gen-autoencoder-truncated", lambda d: truncate(d / "autoencoder_weights.safetensors"),
              CorruptFileError, r"autoencoder_weights\.safetensors was altered"),
    _tampered("gen-denoiser-zero-bytes", lambda d: (d / "denoiser_weights.safetensors").write_bytes(b""),
              CorruptFileError, r"denoiser_weights\.safetensors was altered"),
    _tampered("gen-denoiser-missing", lambda d: (d / "denoiser_weights.safetensors").unlink(), CorruptFileError,
              r"incomplete: denoiser_weights\.safetensors is missing"),
    _tampered("gen-latent-normaliser-missing", lambda d: (d / "latent_normaliser.safetensors").unlink(),
              CorruptFileError, r"latent_normaliser\.safetensors is missing"),
    _tampered("gen-legacy-normaliser-json-corrupt",
              lambda d: (_legacy(d), (d / "normaliser.json").write_text("kind: position")), CorruptFileError,
              r"normaliser\.json is not valid JSON"),
    _tampered("gen-legacy-normaliser-json-without-eps",
              lambda d: (_legacy(d), (d / "normaliser.json").write_text('{"kind": "position"}')), ValueError,
              r"normaliser\.json/\.safetensors: a 'position' normaliser needs \['eps'\]"),
    _tampered("gen-legacy-normaliser-unknown-kind",
              lambda d: (_legacy(d), (d / "normaliser.json").write_text('{"kind": "robust", "eps": 1e-12}')),
              ValueError, r"unknown normaliser kind 'robust'"),
    _tampered("gen-legacy-normaliser-stats-garbage",
              lambda d: (_legacy(d), (d / "normaliser.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}")),
              CorruptFileError, r"normaliser\.safetensors is not a readable safetensors file"),
    Case("gen-legacy-mixed-weights", "generator-files", lambda fx: _pdiff().load(fx._mixed), expect=CorruptFileError,
         match=r"does not fit the configuration in .*pdiff\.json.*mixes files of two generators",
         guard=lambda fx: [_mixed(fx)]),
    Case("gen-garbage-loss-csv-still-loads", "generator-files",
         lambda fx: (lambda d: ((d / "diffusion_loss.csv").write_text('"\x00,,\n'), _pdiff().load(d))[1])(
             fx.pdiff_copy()),
         expect=None, check=lambda g, fx: _same_samples(g, fx) and "diffusion" not in g.history),
    Case("gen-missing-loss-csv-still-loads", "generator-files",
         lambda fx: (lambda d: ((d / "autoencoder_loss.csv").unlink(), _pdiff().load(d))[1])(fx.pdiff_copy()),
         expect=None, check=lambda g, fx: _same_samples(g, fx)),
    Case("gen-load-a-zoo-folder", "generator-files", lambda fx: _pdiff().load(fx.dense_zoo), expect=FileNotFoundError,
         match=r"no saved p-diff generator"),
    Case("gen-save-onto-a-file", "generator-files", lambda fx: fx.pdiff.save(fx._file), expect=NotADirectoryError,
         match=r"is a file, not a directory", guard=lambda fx: [setattr(fx, "_file", _file_target(fx)) or fx._file]),
    Case("gen-save-load-roundtrip", "generator-files",
         lambda fx: _pdiff().load(fx.pdiff.save(fx.fresh("roundtrip") / "g")), expect=None, check=_same_samples),
    Case("gen-save-twice-same-folder", "generator-files",
         lambda fx: (lambda d: (fx.pdiff.save(d), fx.pdiff.save(d), _pdiff().load(d))[2])(fx.fresh("twice") / "g"),
         expect=None, check=_same_samples),
    Case("gen-save-killed-while-publishing", "interrupted", _interrupted_save, expect=FileNotFoundError,
         match=r"save was interrupted"),
    Case("gen-fit-killed-between-checkpoints-resumes", "interrupted", _interrupted_fit, expect=None,
         check=lambda ok, fx: ok),
    # -- fitting -----------------------------------------------------------------------------------------------
    Case("fit-same-run-dir-other-data", "run-dir", lambda fx: _fit(fx, _zoo(fx).vectors()[:4], run_dir=_run_dir(fx)),
         expect=RunDirMismatchError, match=r"holds a generator run on other data.*4 members.*another run_dir",
         guard=lambda fx: [_run_dir(fx)]),
    Case("fit-same-run-dir-perturbed-data", "run-dir",
         lambda fx: _fit(fx, _zoo(fx).vectors() + 1e-3, run_dir=_run_dir(fx)), expect=RunDirMismatchError,
         match=r"other data", guard=lambda fx: [_run_dir(fx)]),
    Case("fit-same-run-dir-other-config", "run-dir",
         lambda fx: _fit(fx, run_dir=_run_dir(fx), config=replace(fx.pdiff_config, latent_noise=0.2)),
         expect=RunDirMismatchError, match=r"another config", guard=lambda fx: [_run_dir(fx)]),
    Case("fit-stage-checkpoint-of-other-data", "run-dir",
         lambda fx: (lambda rd: (shutil.copy(_run_dir(fx) / "autoencoder.safetensors", rd / "autoencoder.safetensors"),
                                 _fit(fx, _zoo(fx).vectors()[:5], run_dir=rd))[1])(fx.fresh("stage")),
         expect=RunDirMismatchError, match=r"autoencoder\.safetensors is the checkpoint of a training run on other data"),
    Case("fit-same-run-dir-same-data-resumes", "run-dir", lambda fx: _fit(fx, run_dir=_run_dir(fx)), expect=None,
         check=_same_samples),
    Case("fit-or-load-folder-of-other-zoo", "run-dir",
         lambda fx: fit_or_load(
             Zoo(fx.seeds_zoo), fx.pdiff_config, fx._fol),
         expect=(RunDirMismatchError, CorruptFileError), match=r"fitted on other data|other data",
         guard=lambda fx: [setattr(fx, "_fol", fx.pdiff_copy()) or fx._fol]),
    Case("fit-nan-vectors", "fit", lambda fx: _fit(fx, torch.tensor([[0.0, float("nan")], [1.0, 2.0]])),
         expect=ParamSpecError, match=r"zoo vectors holds 1 NaN"),
    Case("fit-one-member", "fit", lambda fx: _fit(fx, _zoo(fx).vectors()[:1]), expect=ValueError,
         match=r"\(N >= 2, P\) matrix"),
    Case("fit-a-vector", "fit", lambda fx: _fit(fx, _zoo(fx).vectors()[0]), expect=ValueError,
         match=r"\(N >= 2, P\) matrix"),
    Case("fit-spec-of-other-length", "fit", lambda fx: _fit(fx, _zoo(fx).vectors()[:, :10], spec=_zoo(fx).spec),
         expect=ValueError, match=r"length 10 but the spec has 162"),
    Case("fit-align-without-model", "fit",
         lambda fx: _fit(fx, _zoo(fx).vectors(), config=replace(fx.pdiff_config, align="weight_matching")),
         expect=ValueError, match=r"needs the ParamSpec and a model"),
    Case("sample-before-fit", "fit", lambda fx: _pdiff()(fx.pdiff_config).sample(2), expect=RuntimeError,
         match=r"not fitted.*fit\(zoo\) or PDiff\.load"),
    Case("config-unknown-key", "fit",
         lambda fx: PDiffConfig.from_dict(
             {"layers": 4}), expect=ValueError, match=r"unknown p-diff config keys \['layers'\]"),
    *[Case(f"config-{name}", "fit", lambda fx, d=d: _pdiff_config().from_dict(d), expect=ValueError, match=m)
      for name, d, m in (
          ("ae-channels-a-string", {"ae_channels": "wide"}, r"ae_channels = 'wide' is not valid: expected a list"),
          ("nested-steps-a-string", {"ae_train": {"steps": "many"}}, r"ae_train\.steps = 'many'.*an integer"),
          ("nested-unknown-key", {"diffusion_train": {"epochs": 3}}, r"unknown keys \['diffusion_train\.epochs'\]"),
          ("unknown-schedule", {"schedule": {"kind": "quadratic"}}, r"unknown schedule 'quadratic'"),
          ("latent-channels-fraction", {"latent_channels": 2.5}, r"latent_channels = 2\.5.*an integer"),
          ("ema-above-one", {"diffusion_train": {"ema_decay": 2}}, r"ema_decay=2 must lie in \(0, 1\)"),
          ("not-an-object", ["pca"], r"JSON object"),
      )],
    Case("config-unknown-autoencoder", "fit", lambda fx: replace(fx.pdiff_config, autoencoder="vae"),
         expect=ValueError, match=r"autoencoder='vae'"),
    Case("loop-config-zero-lr", "fit", lambda fx: LoopConfig(lr=0), expect=ValueError, match=r"lr=0 must be"),
    Case("loop-config-nan-lr", "fit", lambda fx: LoopConfig(lr=float("nan")), expect=ValueError,
         match=r"lr=nan must be a finite number"),
    Case("loop-config-zero-batch", "fit", lambda fx: LoopConfig(batch_size=0), expect=ValueError,
         match=r"batch_size >= 1"),
    Case("loop-config-negative-steps", "fit", lambda fx: LoopConfig(steps=-5), expect=ValueError,
         match=r"steps >= 0"),
    Case("loop-config-steps-as-text", "fit", lambda fx: LoopConfig(steps="100"), expect=ValueError,
         match=r"steps='100' must be an integer"),
    Case("loop-config-ema-one", "fit", lambda fx: LoopConfig(ema_decay=1.0), expect=ValueError,
         match=r"ema_decay=1\.0 must lie in \(0, 1\)"),
    Case("loop-config-zero-checkpoint-every", "fit", lambda fx: LoopConfig(checkpoint_every=0), expect=ValueError,
         match=r"checkpoint_every >= 1"),
]
