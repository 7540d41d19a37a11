"""Bad-input cases: sampling (see workbench.app.robustness for how a case is classified).

Groups: ``sampling`` (the number of samples, the sampler, conditions given to an unconditional p-diff generator),
``schedule`` (DDIM steps, DDPM's fixed T steps, eta), ``conditional`` (Cond P-Diff: conditions of the wrong shape,
guidance, task names and descriptions, style images) and ``conditional-files`` (a saved Cond P-Diff generator whose
seen tasks, stored conditions or task table do not agree).

Every bad input is refused before any sampling; the legal edge cases (one DDIM step, eta = 1, a task by name, a
saved generator loaded back) must give finite vectors of the right shape.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from workbench.app.robustness.cases_zoo import edit_json, unseal
from workbench.app.robustness.matrix import Case
from workbench.core.diffusion import DDIMSampler, NoiseSchedule, make_sampler
from workbench.core.io import save_tensors
from workbench.systems.cond_pdiff.generator import CondPDiff, CondPDiffConfig
from workbench.zoo.lora.tasks import DIGIT_TASKS

__all__ = ["CASES"]

NAN, INF = float("nan"), float("inf")


def _cond_cls():
    return CondPDiff, CondPDiffConfig


def _task(name: str):
    return DIGIT_TASKS[name]


def _vectors(n: int, gen_attr: str = "pdiff"):
    """check: a (n, P) matrix of finite parameter vectors of the fixture generator ``gen_attr``."""
    def check(v: Any, fx: Any) -> bool:
        gen = getattr(fx, gen_attr)
        p = gen.pdiff.in_dim if hasattr(gen, "pdiff") else gen.in_dim
        return isinstance(v, torch.Tensor) and tuple(v.shape) == (n, p) and bool(torch.isfinite(v).all())

    return check


def _row(fx: Any) -> torch.Tensor:
    """A legal condition row of the fixture Cond P-Diff generator (the stored condition of 'even')."""
    return fx.cond.seen_conditions[0]


def _width(fx: Any) -> int:
    return int(fx.cond.pdiff.unet.cfg.cond_dim)


def _load_cond(d: Path, fx: Any):
    return _cond_cls()[0].load(d, encoder=fx.cond.encoder)


def _tampered(name: str, damage, match: str, expect: Any = ValueError) -> Case:
    """Load a private copy of the saved Cond P-Diff generator after ``damage(copy)``: a clear error naming the
    file; the damaged copy stays as it was (loading writes nothing)."""
    state: dict[str, Path] = {}

    def guard(fx: Any) -> list[Path]:
        state["d"] = fx.cond_copy()
        damage(state["d"])
        return [state["d"]]

    return Case(name, "conditional-files", lambda fx: _load_cond(state["d"], fx), expect=expect, match=match,
                guard=guard)


def _unsealed(d: Path) -> Path:
    """The Cond P-Diff save ``d`` made to look like one written before saves recorded checksums."""
    return unseal(d / "cond_pdiff.json")


def _conditions(d: Path, tensor: torch.Tensor, sealed: bool = False) -> None:
    if not sealed:
        _unsealed(d)
    save_tensors(d / "seen_conditions.safetensors", {"conditions": tensor})


def _without_null(fx: Any):
    """A loaded copy of the fixture generator with its null condition dropped (as if trained without dropout)."""
    g = _load_cond(fx.cond_dir, fx)
    g.pdiff.null_cond = None
    return g


def _legacy(fx: Any):
    """The fixture generator saved as before task tables were saved (no tasks.json), loaded back."""
    d = _unsealed(fx.cond_copy())
    (d / "tasks.json").unlink()
    return _load_cond(d, fx)


def _one_hot(fx: Any):
    """A one-hot Cond P-Diff generator on the fixture LoRA zoo (fitted once per fixtures)."""
    if not hasattr(fx, "_one_hot_cond"):
        CondPDiff, _ = _cond_cls()
        cfg = replace(fx.cond.config, condition="one_hot")
        fx._one_hot_cond = CondPDiff(cfg).fit(fx.lora_zoo, progress=False)
    return fx._one_hot_cond


def _image_gen():
    """An (unfitted) style-image generator: the image is checked before anything else is needed."""
    CondPDiff, CondPDiffConfig = _cond_cls()
    return CondPDiff(CondPDiffConfig(condition="style_image"))


def _make_sampler(name: str, **kw: Any):
    return make_sampler(NoiseSchedule(), name, **kw)


def _ddim_trajectory(shape: tuple[int, ...], **kw: Any):
    return DDIMSampler(NoiseSchedule(), steps=5).trajectory(lambda x, t, c=None: torch.zeros_like(x), shape, **kw)


N_MIN = r"n must be >= 1"
DDIM_STEPS = r"DDIM steps must lie in \[1, 1000\]"
DDPM_STEPS = r"DDPM always runs all T=1000 steps.*use sampler='ddim' for fewer"
ETA = r"eta must be a number in \[0, 1\]"
GUIDANCE = r"guidance_scale must be a finite number"
INCONSISTENT = r"the saved generator is inconsistent.*re-save it.*or re-fit"

CASES: list[Case] = [
    # -- sampling: the number of samples, the sampler, a condition where there is none ---------------------------
    Case("sampling-n-zero", "sampling", lambda fx: fx.pdiff.sample(0), match=N_MIN + r".*got 0"),
    Case("sampling-n-negative", "sampling", lambda fx: fx.pdiff.sample(-1), match=N_MIN + r".*got -1"),
    Case("sampling-n-fractional", "sampling", lambda fx: fx.pdiff.sample(2.5), match=N_MIN + r".*got 2\.5"),
    Case("sampling-n-as-text", "sampling", lambda fx: fx.pdiff.sample("3"), match=N_MIN + r".*got '3'"),
    Case("sampling-n-bool", "sampling", lambda fx: fx.pdiff.sample(True), match=N_MIN + r".*got True"),
    Case("sampling-trajectory-n-zero-fails-at-call", "sampling", lambda fx: fx.pdiff.trajectory(0), match=N_MIN),
    Case("sampling-sampler-batch-zero", "sampling", lambda fx: _ddim_trajectory((0, 2, 6)), match=N_MIN),
    Case("sampling-unknown-sampler", "sampling", lambda fx: fx.pdiff.sample(2, sampler="euler"),
         match=r"unknown sampler 'euler': use 'ddpm' or 'ddim'"),
    Case("sampling-sampler-none", "sampling", lambda fx: fx.pdiff.sample(2, sampler=None),
         match=r"unknown sampler None: use 'ddpm' or 'ddim'"),
    Case("sampling-sampler-upper-case", "sampling", lambda fx: fx.pdiff.sample(2, sampler="DDIM"),
         match=r"unknown sampler 'DDIM'"),
    Case("sampling-guidance-unconditional", "sampling", lambda fx: fx.pdiff.sample(2, guidance_scale=2.0),
         match=r"guidance_scale=2\.0 needs a condition.*conditional generators only"),
    Case("sampling-guidance-nan-unconditional", "sampling", lambda fx: fx.pdiff.sample(2, guidance_scale=NAN),
         match=GUIDANCE),
    Case("sampling-cond-for-unconditional", "sampling", lambda fx: fx.pdiff.sample(2, cond=torch.zeros(2, 4)),
         match=r"unconditional.*condition of shape \(2, 4\).*without cond="),
    # -- schedule: DDIM steps, DDPM's fixed T steps, eta -----------------------------------------------------------
    Case("schedule-ddim-steps-zero", "schedule", lambda fx: fx.pdiff.sample(2, steps=0), match=DDIM_STEPS + r".*got 0"),
    Case("schedule-ddim-steps-negative", "schedule", lambda fx: fx.pdiff.sample(2, steps=-5), match=DDIM_STEPS),
    Case("schedule-ddim-steps-over-T", "schedule", lambda fx: fx.pdiff.sample(2, steps=1001),
         match=DDIM_STEPS + r".*got 1001"),
    Case("schedule-ddim-steps-fractional", "schedule", lambda fx: fx.pdiff.sample(2, steps=2.5),
         match=DDIM_STEPS + r".*whole number"),
    Case("schedule-ddim-steps-as-text", "schedule", lambda fx: fx.pdiff.sample(2, steps="10"), match=DDIM_STEPS),
    Case("schedule-ddpm-with-steps", "schedule", lambda fx: fx.pdiff.sample(2, sampler="ddpm", steps=50),
         match=DDPM_STEPS),
    Case("schedule-ddpm-steps-zero", "schedule", lambda fx: fx.pdiff.sample(2, sampler="ddpm", steps=0),
         match=DDPM_STEPS),
    Case("schedule-make-sampler-ddpm-steps", "schedule", lambda fx: _make_sampler("ddpm", steps=25),
         match=DDPM_STEPS),
    Case("schedule-ddpm-with-eta", "schedule", lambda fx: fx.pdiff.sample(2, sampler="ddpm", eta=0.5),
         match=r"eta=0\.5 applies to DDIM only"),
    Case("schedule-eta-nan", "schedule", lambda fx: fx.pdiff.sample(2, eta=NAN), match=ETA + r".*got nan"),
    Case("schedule-eta-negative", "schedule", lambda fx: fx.pdiff.sample(2, eta=-1), match=ETA + r".*got -1"),
    Case("schedule-eta-above-one", "schedule", lambda fx: fx.pdiff.sample(2, eta=1.5), match=ETA + r".*got 1\.5"),
    Case("schedule-eta-inf", "schedule", lambda fx: fx.pdiff.sample(2, eta=INF), match=ETA + r".*got inf"),
    Case("schedule-eta-as-text", "schedule", lambda fx: fx.pdiff.sample(2, eta="0.5"), match=ETA),
    Case("schedule-ddim-one-step-works", "schedule", lambda fx: fx.pdiff.sample(2, steps=1), expect=None,
         check=_vectors(2)),
    Case("schedule-ddim-eta-one-works", "schedule", lambda fx: fx.pdiff.sample(2, steps=5, eta=1.0, seed=3),
         expect=None, check=_vectors(2)),
    Case("schedule-default-is-ddim-50", "schedule", lambda fx: fx.pdiff.sample(2, seed=4), expect=None,
         check=lambda v, fx: _vectors(2)(v, fx) and torch.equal(v, fx.pdiff.sample(2, steps=50, eta=0.0, seed=4))),
    # -- conditional: conditions of the wrong shape, guidance ------------------------------------------------------
    Case("conditional-cond-wrong-dim", "conditional",
         lambda fx: fx.cond.pdiff.sample(2, cond=torch.zeros(2, 7)),
         match=r"condition has shape \(2, 7\) but this generator expects \(2, 384\)"),
    Case("conditional-cond-wrong-batch", "conditional",
         lambda fx: fx.cond.pdiff.sample(2, cond=_row(fx).expand(3, -1)),
         match=r"condition has shape \(3, 384\) but this generator expects \(2, 384\)"),
    Case("conditional-cond-one-row-for-many", "conditional", lambda fx: fx.cond.pdiff.sample(2, cond=_row(fx)),
         match=r"condition has shape \(384,\) but this generator expects \(2, 384\)"),
    Case("conditional-cond-missing", "conditional", lambda fx: fx.cond.pdiff.sample(2),
         match=r"this generator is conditional: pass cond= of shape \(2, 384\)"),
    Case("conditional-cond-nan", "conditional",
         lambda fx: fx.cond.pdiff.sample(2, cond=torch.full((2, _width(fx)), NAN)), match=r"NaN or Inf"),
    Case("conditional-cond-not-a-tensor", "conditional", lambda fx: fx.cond.pdiff.sample(2, cond=[[0.0] * 384] * 2),
         expect=TypeError, match=r"cond must be a torch\.Tensor"),
    Case("conditional-trajectory-wrong-dim", "conditional", lambda fx: fx.cond.condition_trajectory(torch.zeros(7), 2),
         match=r"shape \(2, 7\) but this generator expects \(2, 384\)"),
    Case("conditional-trajectory-several-rows", "conditional",
         lambda fx: fx.cond.condition_trajectory(fx.cond.seen_conditions[:2], 2),
         match=r"one condition row \(D,\) or \(1, D\) is expected, got shape \(2, 384\)"),
    Case("conditional-guidance-nan", "conditional", lambda fx: fx.cond.sample("even", 2, guidance_scale=NAN),
         match=GUIDANCE + r".*got nan"),
    Case("conditional-guidance-inf", "conditional", lambda fx: fx.cond.sample("even", 2, guidance_scale=INF),
         match=GUIDANCE + r".*got inf"),
    Case("conditional-guidance-minus-inf-text", "conditional",
         lambda fx: fx.cond.sample_text("Is the digit even?", n=2, guidance_scale=-INF), match=GUIDANCE),
    Case("conditional-guidance-as-text", "conditional", lambda fx: fx.cond.sample("even", 2, guidance_scale="2"),
         match=GUIDANCE),
    Case("conditional-guidance-without-null-condition", "conditional",
         lambda fx: _without_null(fx).sample("even", 2, guidance_scale=2.0),
         match=r"guidance_scale=2\.0 needs a generator trained with cond_dropout > 0"),
    Case("conditional-pdiff-guidance-without-null-cond", "conditional",
         lambda fx: fx.cond.pdiff.sample(2, cond=_row(fx).expand(2, -1), guidance_scale=2.0),
         match=r"classifier-free guidance needs the null condition"),
    Case("conditional-null-cond-wrong-width", "conditional",
         lambda fx: fx.cond.pdiff.sample(2, cond=_row(fx).expand(2, -1), guidance_scale=2.0,
                                         null_cond=torch.zeros(1, 5)),
         match=r"null condition has shape \(1, 5\).*384-d"),
    Case("conditional-guidance-works", "conditional", lambda fx: fx.cond.sample("even", 2, guidance_scale=2.0),
         expect=None, check=_vectors(2, "cond")),
    Case("conditional-n-zero", "conditional", lambda fx: fx.cond.sample("even", 0), match=N_MIN),
    Case("conditional-n-negative", "conditional", lambda fx: fx.cond.sample(_task("even"), -1),
         match=N_MIN + r".*got -1"),
    Case("conditional-text-n-fractional", "conditional", lambda fx: fx.cond.sample_text("Is the digit even?", n=2.5),
         match=N_MIN),
    Case("conditional-trajectory-n-negative", "conditional", lambda fx: fx.cond.condition_trajectory(_row(fx), -1),
         match=N_MIN),
    Case("conditional-ddpm-with-steps", "conditional", lambda fx: fx.cond.sample("even", 2, sampler="ddpm", steps=20),
         match=DDPM_STEPS),
    Case("conditional-ddim-steps-over-T", "conditional", lambda fx: fx.cond.sample("even", 2, steps=5000),
         match=DDIM_STEPS),
    Case("conditional-unknown-sampler", "conditional", lambda fx: fx.cond.sample("even", 2, sampler="plms"),
         match=r"unknown sampler 'plms'"),
    # -- conditional: task names and descriptions -----------------------------------------------------------------
    Case("conditional-empty-description", "conditional", lambda fx: fx.cond.sample_text("", n=2),
         match=r"the task description is empty"),
    Case("conditional-whitespace-description", "conditional", lambda fx: fx.cond.sample_text("  \n\t", n=2),
         match=r"the task description is empty"),
    Case("conditional-description-none", "conditional", lambda fx: fx.cond.sample_text(None, n=2), expect=TypeError,
         match=r"description must be a str"),
    Case("conditional-examples-as-one-string", "conditional",
         lambda fx: fx.cond.sample_text("Is the digit even?", "A handwritten 4 → yes.", n=2), expect=TypeError,
         match=r"examples must be a list of strings"),
    Case("conditional-task-with-empty-description", "conditional",
         lambda fx: fx.cond.sample(replace(_task("even"), description=" "), 2),
         match=r"task 'even' has an empty description"),
    Case("conditional-unknown-task-name", "conditional", lambda fx: fx.cond.sample("prime_or_not", 2),
         match=r"unknown task 'prime_or_not'.*known tasks are .*'even'.*'odd'"),
    Case("conditional-empty-task-name", "conditional", lambda fx: fx.cond.sample("", 2),
         match=r"the task name is empty"),
    Case("conditional-task-not-a-task", "conditional", lambda fx: fx.cond.sample(3, 2), expect=TypeError,
         match=r"a Task or a task name \(str\)"),
    Case("conditional-condition-of-bare-name", "conditional", lambda fx: fx.cond.condition("even"),
         expect=TypeError, match=r"takes a list of tasks"),
    Case("conditional-seen-task-name-works", "conditional", lambda fx: fx.cond.sample("even", 3, seed=1),
         expect=None, check=lambda v, fx: _vectors(3, "cond")(v, fx)
         and torch.equal(v, fx.cond.sample(_task("even"), 3, seed=1))),
    Case("conditional-unseen-task-name-works", "conditional", lambda fx: fx.cond.sample("odd", 2, seed=2),
         expect=None, check=_vectors(2, "cond")),
    Case("conditional-task-name-after-load-works", "conditional",
         lambda fx: _load_cond(fx.cond_dir, fx).sample("odd", 2, seed=2), expect=None,
         check=lambda v, fx: _vectors(2, "cond")(v, fx) and torch.equal(v, fx.cond.sample("odd", 2, seed=2)),
         guard=lambda fx: [fx.cond_dir]),
    Case("conditional-legacy-save-task-name", "conditional", lambda fx: _legacy(fx).sample("even", 2),
         match=r"stores no task table.*pass a Task"),
    Case("conditional-legacy-save-task-object-works", "conditional",
         lambda fx: _legacy(fx).sample(_task("even"), 2, seed=1), expect=None,
         check=lambda v, fx: torch.equal(v, fx.cond.sample(_task("even"), 2, seed=1))),
    Case("conditional-one-hot-unseen-task", "conditional", lambda fx: _one_hot(fx).sample("odd", 2),
         match=r"one_hot condition exists only for the training tasks; \['odd'\] are unseen.*text condition"),
    Case("conditional-one-hot-unseen-task-object", "conditional", lambda fx: _one_hot(fx).sample(_task("odd"), 2),
         match=r"\['odd'\] are unseen"),
    Case("conditional-one-hot-unknown-task-name", "conditional", lambda fx: _one_hot(fx).sample("eleven", 2),
         match=r"unknown task 'eleven'.*known tasks"),
    Case("conditional-one-hot-seen-name-works", "conditional", lambda fx: _one_hot(fx).sample("zero_or_six", 2),
         expect=None, check=lambda v, fx: tuple(v.shape) == (2, fx.cond.pdiff.in_dim) and bool(torch.isfinite(v).all())),
    Case("conditional-free-text-on-one-hot", "conditional", lambda fx: _one_hot(fx).sample_text("Is it odd?", n=2),
         match=r"free-text sampling needs a text condition"),
    Case("conditional-sample-before-fit", "conditional", lambda fx: _cond_cls()[0]().sample(_task("even"), 2),
         expect=RuntimeError, match=r"not fitted.*CondPDiff\.load"),
    # -- conditional: style images ---------------------------------------------------------------------------------
    Case("conditional-image-on-text-generator", "conditional", lambda fx: fx.cond.sample_image(torch.rand(3, 8, 8)),
         match=r"image-conditioned sampling needs condition='style_image'"),
    Case("conditional-image-grey", "conditional", lambda fx: _image_gen().sample_image(torch.rand(1, 16, 16)),
         match=r"RGB of shape \(3, H, W\) or \(1, 3, H, W\).*got shape \(1, 16, 16\)"),
    Case("conditional-image-channels-last", "conditional", lambda fx: _image_gen().sample_image(torch.rand(16, 16, 3)),
         match=r"RGB of shape \(3, H, W\).*got shape \(16, 16, 3\)"),
    Case("conditional-image-batch", "conditional", lambda fx: _image_gen().sample_image(torch.rand(2, 3, 16, 16)),
         match=r"one image \(3, H, W\) or \(1, 3, H, W\) is expected, got a batch of shape \(2, 3, 16, 16\)"),
    Case("conditional-image-flat", "conditional", lambda fx: _image_gen().sample_image(torch.rand(768)),
         match=r"RGB of shape \(3, H, W\).*got shape \(768,\)"),
    Case("conditional-image-8-bit", "conditional",
         lambda fx: _image_gen().sample_image(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)),
         match=r"image values must lie in \[0, 1\].*divide 8-bit images by 255"),
    Case("conditional-image-negative", "conditional", lambda fx: _image_gen().sample_image(torch.rand(3, 8, 8) - 0.5),
         match=r"image values must lie in \[0, 1\]"),
    Case("conditional-image-nan", "conditional",
         lambda fx: _image_gen().sample_image(torch.full((3, 8, 8), NAN)), match=r"image contains NaN or Inf"),
    Case("conditional-image-not-an-image", "conditional", lambda fx: _image_gen().sample_image("sepia.png"),
         expect=TypeError, match=r"image must be a tensor"),
    Case("conditional-image-good-shape-unfitted", "conditional",
         lambda fx: _image_gen().sample_image(torch.rand(1, 3, 8, 8)), expect=RuntimeError, match=r"not fitted"),
    # -- conditional-files: saved seen tasks, conditions and task table must agree -----------------------------------
    _tampered("conditional-load-cut-seen-list",
              lambda d: edit_json(d / "cond_pdiff.json", lambda m: m.__setitem__("seen", m["seen"][:2])),
              r"cond_pdiff\.json lists 2 seen tasks but .*seen_conditions\.safetensors holds 3 seen conditions.*"
              + INCONSISTENT),
    _tampered("conditional-load-seen-list-too-long",
              lambda d: edit_json(d / "cond_pdiff.json", lambda m: m["seen"].append("odd")),
              r"lists 4 seen tasks but .* holds 3 seen conditions.*" + INCONSISTENT),
    _tampered("conditional-load-seen-not-a-list",
              lambda d: edit_json(d / "cond_pdiff.json", lambda m: m.__setitem__("seen", "even")),
              r"cond_pdiff\.json: 'seen' must be a non-empty list of task names.*" + INCONSISTENT),
    _tampered("conditional-load-seen-missing",
              lambda d: edit_json(d / "cond_pdiff.json", lambda m: m.pop("seen")),
              r"'seen' must be a non-empty list.*got None"),
    _tampered("conditional-load-seen-duplicate",
              lambda d: edit_json(d / "cond_pdiff.json", lambda m: m.__setitem__("seen", ["even"] * 3)),
              r"lists a seen task twice.*" + INCONSISTENT),
    _tampered("conditional-load-seen-renamed",
              lambda d: edit_json(d / "cond_pdiff.json", lambda m: m["seen"].__setitem__(2, "bogus")),
              r"seen tasks \['bogus'\] .* are not in the task table .*tasks\.json.*" + INCONSISTENT),
    _tampered("conditional-load-seen-conditions-short",
              lambda d: _conditions(d, torch.zeros(2, 384)),
              r"lists 3 seen tasks but .*seen_conditions\.safetensors holds 2 seen conditions.*" + INCONSISTENT),
    _tampered("conditional-load-seen-conditions-wrong-width",
              lambda d: _conditions(d, torch.zeros(3, 10)),
              r"seen_conditions\.safetensors holds 10-d conditions for 3 tasks but the denoiser was trained with "
              r"384-d conditions.*" + INCONSISTENT),
    _tampered("conditional-load-seen-conditions-nan",
              lambda d: _conditions(d, torch.full((3, 384), NAN)), r"contains NaN or Inf values.*" + INCONSISTENT),
    _tampered("conditional-load-seen-conditions-vector",
              lambda d: _conditions(d, torch.zeros(384)), r"holds no \(tasks, D\) condition matrix"),
    _tampered("conditional-load-task-table-corrupt",
              lambda d: (_unsealed(d) / "tasks.json").write_text(json.dumps({"tasks": [{"name": "even"}]})),
              r"tasks\.json is not a task table.*" + INCONSISTENT),
    _tampered("conditional-load-task-table-duplicate",
              lambda d: edit_json(_unsealed(d) / "tasks.json", lambda m: m["tasks"].append(m["tasks"][0])),
              r"tasks\.json names a task twice.*" + INCONSISTENT),
    # a current save records every file's sha256: the same edits are caught before anything is read
    _tampered("conditional-load-sealed-conditions-altered", lambda d: _conditions(d, torch.zeros(2, 384), sealed=True),
              r"seen_conditions\.safetensors was altered.*checksum"),
    _tampered("conditional-load-sealed-task-table-altered",
              lambda d: edit_json(d / "tasks.json", lambda m: m["tasks"].append(m["tasks"][0])),
              r"tasks\.json was altered.*checksum"),
    _tampered("conditional-load-sealed-config-edited",
              lambda d: edit_json(d / "cond_pdiff.json", lambda m: m["config"].__setitem__("guidance_scale", 3.0)),
              r"cond_pdiff\.json: its config was edited after saving"),
    _tampered("conditional-load-no-marker", lambda d: (d / "cond_pdiff.json").unlink(),
              r"no saved Cond P-Diff generator.*save was interrupted", expect=FileNotFoundError),
]

assert len({c.name for c in CASES}) == len(CASES), "duplicate case names"
