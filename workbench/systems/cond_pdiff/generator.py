"""Cond P-Diff: task-conditioned generation of LoRA parameters.

Task normalisation (each task's checkpoints z-scored with their own statistics) → parameter autoencoder → latent
diffusion whose denoiser receives a condition per task: an embedding of the task description (and two examples) by
a text encoder, a one-hot code, or a learnable code. Condition dropout in training enables classifier-free guidance
at sampling (beyond the paper). For a task never seen in training, the condition comes from its text and the
normalisation statistics from the seen task whose condition is nearest (cosine) — the only statistics there are.

The vision setting conditions on a *style image* instead (``condition="style_image"``): each training condition
carries its reference image (``Condition.image``), a pretrained image encoder embeds it, and
:meth:`CondPDiff.sample_image` generates for any image, seen or not.

Conditions come from the zoo interface only (:class:`workbench.zoo.protocol.Condition` via ``zoo.conditions``), so
one generator serves every zoo family — tasks, styles, datasets, codes — and evaluations reach latents through the
public :meth:`CondPDiff.encode` / :meth:`CondPDiff.decode` / :meth:`CondPDiff.interpolate_latent` /
:meth:`CondPDiff.latents_to_vectors`, never through the p-diff core inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from workbench.core.config import NAMED_UNKNOWN_KEYS, JSONConfig
from workbench.core.device import DeviceLike, resolve_device
from workbench.core.diffusion import check_guidance_scale, check_num_samples
from workbench.core.io import atomic_write_json, load_tensors, read_json, save_tensors, staged_directory
from workbench.core.progress import progress_label
from workbench.core.timing import Stopwatch
from workbench.evaluation.memorisation import interpolate_latent
from workbench.generator.latent_diffusion import PDiff, PDiffConfig, check_bundle, seal_bundle
from workbench.nn.encoders import (
    ImageEncoder,
    TextEncoder,
    check_condition_image,
    make_image_encoder,
    make_text_encoder,
    one_hot,
)
from workbench.zoo.protocol import Condition

__all__ = ["CondPDiffConfig", "CondPDiff", "CONDITIONS", "fit_or_load_cond"]

CONDITIONS = ("one_hot", "learnable", "description", "description+examples", "style_image")
TASKS_FILE = "tasks.json"  # every condition (seen, then unseen) as Condition dicts: names work after load


@dataclass(frozen=True)
class CondPDiffConfig(JSONConfig, name="Cond P-Diff config", unknown_keys=NAMED_UNKNOWN_KEYS):
    """The conditional generator: a p-diff configuration plus how tasks are encoded."""

    pdiff: PDiffConfig = field(default_factory=lambda: PDiffConfig(normaliser="task"))
    condition: str = "description+examples"
    text_encoder: str = "minilm"
    image_encoder: str = "efficientnet_lite0"
    learnable_dim: int = 64
    cond_dropout: float = 0.1
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition={self.condition!r}: use one of {CONDITIONS}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")

    @property
    def uses_text(self) -> bool:
        """Whether the condition is a text embedding (the only kind that reaches unseen tasks)."""
        return self.condition.startswith("description")

    @property
    def uses_image(self) -> bool:
        """Whether the condition is an image embedding (a style image)."""
        return self.condition == "style_image"

    @property
    def embeds(self) -> bool:
        """Whether conditions are encoder embeddings (text or image): the kinds that reach unseen tasks."""
        return self.uses_text or self.uses_image


class CondPDiff:
    """Fit on a zoo's seen conditions (tasks, styles, ...); sample parameter vectors for any condition (or free
    text, or an image)."""

    def __init__(self, config: CondPDiffConfig | None = None, *, encoder: TextEncoder | None = None,
                 cache_dir: str | Path | None = None, device: DeviceLike = "cpu",
                 image_encoder: ImageEncoder | None = None) -> None:
        self.config = config or CondPDiffConfig()
        self.device = resolve_device(device)
        self._encoder = encoder
        self._image_encoder = image_encoder
        self.cache_dir = cache_dir
        self.pdiff = PDiff(self.config.pdiff, device=device)
        self.seen: list[str] = []
        self.seen_conditions: torch.Tensor | None = None  # (T, D) condition of every seen task
        # every condition the zoo names (seen, then unseen), ``seen`` relative to this generator: sample(name) looks
        # here; images are not kept across save/load (the seen ones live on as seen_conditions)
        self.tasks: dict[str, Condition] = {}
        self.seconds: dict[str, float] = {}

    @property
    def encoder(self) -> TextEncoder:
        """The text encoder (loaded on first use)."""
        if self._encoder is None:
            # on the generator's device: a GPU encodes a task zoo's texts in one batch
            self._encoder = make_text_encoder(self.config.text_encoder, self.cache_dir, device=str(self.device))
        return self._encoder

    @property
    def image_encoder(self) -> ImageEncoder:
        """The image encoder (loaded on first use)."""
        if self._image_encoder is None:
            self._image_encoder = make_image_encoder(self.config.image_encoder, device=str(self.device))
        return self._image_encoder

    # -- conditions ----------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.seen_conditions is None or self.pdiff.unet is None:
            raise RuntimeError("the generator is not fitted: call fit(zoo) or CondPDiff.load(directory)")

    def _named(self, name: str) -> Condition:
        """The stored condition of a name, or a bare one (name only) when the table does not hold it."""
        if name in self.tasks:
            return self.tasks[name]
        return Condition(name=name, kind="style" if self.config.uses_image else "task", seen=name in self.seen)

    def resolve(self, task: Condition | str | Any) -> Condition:
        """A condition given by name → its :class:`Condition` (from the table stored at fit time); a Condition stays
        as it is, and an object with ``name``/``description``/``examples`` (the old ``Task``) becomes one. Unknown
        names are a ValueError listing the known ones."""
        if isinstance(task, Condition):
            return task
        if not isinstance(task, str):
            if isinstance(getattr(task, "name", None), str) and isinstance(getattr(task, "description", None), str):
                # duck-typed: the LoRA zoos' Task (generators stay free of any zoo family's types)
                return Condition(name=task.name, kind="task", seen=task.name in self.seen,
                                 description=task.description, examples=tuple(getattr(task, "examples", ())))
            raise TypeError(f"a task is a Condition, a Task or a task name (str), got {type(task).__name__}")
        if not task.strip():
            raise ValueError("the task name is empty: pass a task name (e.g. 'even') or a Condition; for a "
                             "description of your own use sample_text()")
        if self.config.uses_image:
            return self._named(task)  # a seen style by name (condition() says when there is no stored image for it)
        if self.config.uses_text:
            if task in self.tasks:
                return self.tasks[task]
            if not self.tasks:
                raise ValueError(f"task {task!r}: this generator stores no task table (saved before task tables "
                                 f"were; seen tasks: {self.seen}): pass a Task or a Condition (e.g. from "
                                 "zoo.conditions) or sample_text(description), or re-fit and save it (saves now hold "
                                 "the table)")
        elif task in self.seen or task in self.tasks:
            return self._named(task)  # one-hot / learnable: condition() refuses unseen tasks with its own message
        unseen = [n for n in self.tasks if n not in self.seen]
        raise ValueError(f"unknown task {task!r}: known tasks are {self.seen} (seen) and {unseen} (unseen); "
                         "for a task of your own use sample_text(description, examples)")

    def text_of(self, task: Condition | Any) -> str:
        """The text a condition is conditioned on (its description, with its examples for
        ``description+examples``)."""
        task = self.resolve(task)
        if not task.description.strip():
            raise ValueError(f"task {task.name!r} has an empty description: a text condition needs a sentence "
                             "describing the task, e.g. 'Is the digit even?'")
        return task.text(with_examples=self.config.condition == "description+examples")

    def condition(self, tasks: Sequence[Condition | str | Any]) -> torch.Tensor:
        """Condition rows for tasks (Conditions, task names or Task objects): text embeddings, one-hot rows or
        learnable-table ids (seen tasks only for the last two); for image conditions, the stored embeddings of seen
        styles (by name)."""
        if isinstance(tasks, (str, Condition)) or hasattr(tasks, "name"):
            raise TypeError("condition() takes a list of tasks; wrap a single task in a list")
        c = self.config.condition
        tasks = [self.resolve(t) for t in tasks]
        if self.config.uses_text:
            return self.encoder.encode([self.text_of(t) for t in tasks])
        names = [t.name for t in tasks]
        if self.config.uses_image:
            missing = [n for n in names if n not in self.seen]
            if missing:
                raise ValueError(f"no stored style image for {missing}; condition on an image with sample_image()")
            return self.seen_conditions[[self.seen.index(n) for n in names]]
        missing = [n for n in names if n not in self.seen]
        if missing:
            raise ValueError(f"a {c} condition exists only for the training tasks; {missing} are unseen — "
                             "use a text condition ('description' or 'description+examples') for unseen tasks")
        ids = torch.as_tensor([self.seen.index(n) for n in names])
        return one_hot(ids, len(self.seen)) if c == "one_hot" else ids.float()[:, None]

    def _null(self, dim: int) -> torch.Tensor:
        if self.config.condition == "learnable":
            return torch.tensor([float(len(self.seen))])  # the table's extra row
        return torch.zeros(dim)

    def nearest_seen(self, cond: torch.Tensor) -> list[str]:
        """For each condition row, the seen task whose condition is most similar (cosine)."""
        if not self.config.embeds:
            raise ValueError("nearest seen task by condition needs text or image conditions")
        sim = torch.nn.functional.normalize(cond, dim=-1) @ torch.nn.functional.normalize(self.seen_conditions,
                                                                                          dim=-1).T
        return [self.seen[int(i)] for i in sim.argmax(1)]

    def _encode_images(self, conditions: Sequence[Condition]) -> torch.Tensor:
        """Image-encoder rows of conditions that carry an image (a style's reference)."""
        missing = [c.name for c in conditions if c.image is None]
        if missing:
            raise ValueError(f"the conditions {missing} carry no image (Condition.image): a style_image generator "
                             "trains on conditions with reference images")
        return self.image_encoder.encode(torch.stack([c.image for c in conditions]))

    # -- fitting -------------------------------------------------------------------------------------
    def fit(self, zoo: Any, *, run_dir: str | Path | None = None, progress: bool = True,
            tasks: Sequence[str] | None = None) -> "CondPDiff":
        """Fit the task-normalised autoencoder and the conditional latent diffusion on the zoo's seen conditions
        (``zoo.conditions`` with ``seen``), or on ``tasks``, names of some of its conditions."""
        watch = Stopwatch()
        known = {c.name: c for c in zoo.conditions}
        self.seen = list(tasks) if tasks is not None else [n for n, c in known.items() if c.seen]
        unknown = [t for t in self.seen if t not in known]
        if unknown or not self.seen:
            raise ValueError(f"fit on the zoo's conditions {list(known)}: got {self.seen or 'none'}"
                             f"{f' ({unknown} unknown)' if unknown else ''}")
        vectors = zoo.vectors(self.seen)
        ids = torch.cat([torch.full((len(zoo.vectors([t])),), i) for i, t in enumerate(self.seen)])
        # seen relative to this generator (a subset fit leaves the zoo's other conditions unseen), seen ones first
        order = [*self.seen, *(n for n in known if n not in self.seen)]
        self.tasks = {n: _with_seen(known[n], n in self.seen) for n in order}
        seen = [self.tasks[t] for t in self.seen]
        self.seen_conditions = self._encode_images(seen) if self.config.uses_image else self.condition(seen)
        cond = self.seen_conditions[ids]
        rd = Path(run_dir) if run_dir is not None else None
        self.pdiff.fit_autoencoder(vectors, groups=ids, run_dir=rd, progress=progress)
        learnable = self.config.condition == "learnable"
        self.pdiff.fit_diffusion(vectors=vectors, groups=ids, cond=cond,
                                 cond_dim=self.config.learnable_dim if learnable else cond.shape[1],
                                 cond_vocab=len(self.seen) if learnable else 0,
                                 cond_dropout=self.config.cond_dropout,
                                 null_cond=self._null(cond.shape[1]) if self.config.cond_dropout else None,
                                 run_dir=rd, progress=progress)
        self.seconds = {**self.pdiff.seconds, "total": watch.total}
        return self

    # -- latents: what evaluations may use instead of the p-diff core --------------------------------
    def stats_groups(self, tasks: Sequence[str | Condition | None]) -> torch.Tensor | None:
        """Per row, the seen task whose normalisation statistics apply (None for normalisers without per-task
        statistics); with task normalisation every name must be a seen task."""
        if self.config.pdiff.normaliser != "task":
            return None
        names = [t.name if isinstance(t, Condition) else t for t in tasks]
        if any(n is None for n in names):
            raise ValueError("task-normalised generators need the seen task names whose statistics apply "
                             f"(one of {self.seen}) to encode, decode or interpolate latents")
        unknown = [n for n in names if n not in self.seen]
        if unknown:
            raise ValueError(f"{unknown} have no normalisation statistics: name seen tasks ({self.seen})")
        return torch.as_tensor([self.seen.index(n) for n in names])

    def encode(self, vectors: torch.Tensor, task: str | Condition | None = None) -> torch.Tensor:
        """Parameter vectors (N, P) of one seen task → autoencoder latents, with that task's statistics."""
        self._check_fitted()
        groups = self.stats_groups([task])
        return self.pdiff.encode(vectors, None if groups is None else groups.expand(len(vectors)))

    def decode(self, latents: torch.Tensor, task: str | Condition | None = None) -> torch.Tensor:
        """Autoencoder latents → parameter vectors, un-normalised with one seen task's statistics."""
        self._check_fitted()
        groups = self.stats_groups([task])
        return self.pdiff.decode(latents, None if groups is None else groups.expand(len(latents)))

    def latents_to_vectors(self, z: torch.Tensor, task: str | Condition | None = None) -> torch.Tensor:
        """Standardised diffusion latents (e.g. a trajectory state's ``xt``) → parameter vectors of one seen task."""
        self._check_fitted()
        return self.pdiff.latents_to_vectors(z, self.stats_groups([task]))

    def interpolate_latent(self, v1: torch.Tensor, v2: torch.Tensor, lambdas: Sequence[float],
                           tasks: tuple[str, str] | None = None) -> torch.Tensor:
        """Encode two vectors (each with its own task's statistics, ``tasks``), interpolate their latents linearly
        and decode (un-normalising with the statistics interpolated by the same λ)."""
        self._check_fitted()
        groups = self.stats_groups(list(tasks) if tasks is not None else [None, None])
        return interpolate_latent(self.pdiff, v1, v2, lambdas, None if groups is None else tuple(groups.tolist()))

    # -- sampling ------------------------------------------------------------------------------------
    def _conditioning(self, cond_row: torch.Tensor, n: int, guidance_scale: float | None) -> dict[str, Any]:
        """The denoiser's condition arguments for ``n`` samples of one condition row (with guidance settings)."""
        check_num_samples(n)
        self._check_fitted()
        gs = self.config.guidance_scale if guidance_scale is None else guidance_scale
        check_guidance_scale(gs)
        null = self.pdiff.null_cond
        if gs != 1.0 and null is None:
            raise ValueError(f"guidance_scale={gs} needs a generator trained with cond_dropout > 0 (this one has no "
                             "null condition): leave guidance_scale at 1, or re-fit with cond_dropout")
        if not isinstance(cond_row, torch.Tensor):
            raise TypeError(f"the condition row must be a torch.Tensor, got {type(cond_row).__name__}")
        if cond_row.ndim > 2 or (cond_row.ndim == 2 and cond_row.shape[0] != 1):
            raise ValueError(f"one condition row (D,) or (1, D) is expected, got shape {tuple(cond_row.shape)}: "
                             "e.g. condition([task])[0]")
        return {"cond": cond_row.reshape(1, -1).expand(n, -1), "guidance_scale": gs,
                "null_cond": None if null is None else null.reshape(1, -1)}

    def _sample(self, cond_row: torch.Tensor, stats_task: str, n: int, *, seed: int, sampler: str,
                steps: int | None, guidance_scale: float | None) -> torch.Tensor:
        conditioning = self._conditioning(cond_row, n, guidance_scale)
        groups = torch.full((n,), self.seen.index(stats_task))
        return self.pdiff.sample(n, sampler=sampler, steps=steps, seed=seed, groups=groups, **conditioning)

    def sample(self, task: Condition | str | Any, n: int, *, seed: int = 0, sampler: str = "ddim",
               steps: int | None = None, guidance_scale: float | None = None) -> torch.Tensor:
        """``n`` parameter vectors for ``task``: a Condition, a task name (seen or unseen, from the zoo's conditions
        stored at fit time; a seen style by name for image conditions) or a Task. ``steps``: DDIM's (default 50);
        DDPM runs all T steps."""
        check_num_samples(n)
        self._check_fitted()
        task = self.resolve(task)
        name = task.name
        cond = self.condition([task])
        stats = name if name in self.seen else self.nearest_seen(cond)[0]
        return self._sample(cond[0], stats, n, seed=seed, sampler=sampler, steps=steps, guidance_scale=guidance_scale)

    def sample_image(self, image: torch.Tensor, n: int = 8, *, seed: int = 0, sampler: str = "ddim",
                     steps: int | None = None, guidance_scale: float | None = None) -> tuple[torch.Tensor, str]:
        """Vectors conditioned on one style image, (3, H, W) or (1, 3, H, W) with values in [0, 1]; also returns
        the nearest seen style."""
        if not self.config.uses_image:
            raise ValueError("image-conditioned sampling needs condition='style_image'")
        image = check_condition_image(image)
        check_num_samples(n)
        self._check_fitted()
        cond = self.image_encoder.encode(image)
        near = self.nearest_seen(cond)[0]
        return self._sample(cond[0], near, n, seed=seed, sampler=sampler, steps=steps,
                            guidance_scale=guidance_scale), near

    def condition_trajectory(self, cond_row: torch.Tensor, n: int = 1, *, seed: int = 0, steps: int | None = None,
                             guidance_scale: float | None = None):
        """DDIM trajectory (every intermediate state; ``steps`` default 50) for one condition row, e.g.
        ``condition([style])[0]``."""
        return self.pdiff.trajectory(n, sampler="ddim", steps=steps, seed=seed,
                                     **self._conditioning(cond_row, n, guidance_scale))

    def sample_text(self, description: str, examples: Sequence[str] = (), n: int = 8, *, seed: int = 0,
                    sampler: str = "ddim", steps: int | None = None, guidance_scale: float | None = None
                    ) -> tuple[torch.Tensor, str]:
        """Vectors for a free-text task description (and examples); also returns the nearest seen task."""
        if not self.config.uses_text:
            raise ValueError("free-text sampling needs a text condition")
        if not isinstance(description, str):
            raise TypeError(f"the task description must be a str, got {type(description).__name__}")
        if not description.strip():
            raise ValueError("the task description is empty: describe the task in a sentence, e.g. "
                             "'Is the digit even?'")
        if isinstance(examples, str) or not all(isinstance(e, str) for e in examples):
            raise TypeError("examples must be a list of strings (wrap a single example in a list)")
        check_num_samples(n)
        self._check_fitted()
        # the same text format as the training tasks' conditions
        task = Condition(name="free text", kind="task", seen=False, description=description, examples=tuple(examples))
        cond = self.encoder.encode([self.text_of(task)])
        near = self.nearest_seen(cond)[0]
        return self._sample(cond[0], near, n, seed=seed, sampler=sampler, steps=steps,
                            guidance_scale=guidance_scale), near

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """p-diff weights and normalisers, the seen tasks and their condition rows, and every condition as a
        Condition dict (safetensors, JSON): staged and published whole, ``cond_pdiff.json`` (with every file's
        sha256) last — complete or not at all."""
        self._check_fitted()
        with staged_directory(directory, "cond_pdiff.json") as stage:
            self.pdiff.write_bundle(stage)
            save_tensors(stage / "seen_conditions.safetensors", {"conditions": self.seen_conditions})
            atomic_write_json(stage / TASKS_FILE, {"tasks": [t.to_dict() for t in self.tasks.values()]})
            seal_bundle(stage, {"config": self.config.to_dict(), "seen": self.seen, "seconds": self.seconds},
                        "cond_pdiff.json")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path, *, encoder: TextEncoder | None = None,
             cache_dir: str | Path | None = None, image_encoder: ImageEncoder | None = None,
             device: DeviceLike = None) -> "CondPDiff":
        """Inverse of :meth:`save`."""
        d = Path(directory)
        meta_path = d / "cond_pdiff.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no saved Cond P-Diff generator in {d} (cond_pdiff.json is missing: it was "
                                    "never saved there, or its save was interrupted); fit and save it again")
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):  # the file's content is wrong
            raise ValueError(f"{meta_path} has no generator config: the saved generator is "  # noqa: TRY004
                             "inconsistent — re-save it (CondPDiff.save) or re-fit")
        check_bundle(d, meta, "cond_pdiff.json")
        self = cls(CondPDiffConfig.from_dict(meta["config"]), encoder=encoder, cache_dir=cache_dir,
                   image_encoder=image_encoder, device=device)
        self.pdiff = PDiff.load(d, device=self.device)
        self.seen = meta.get("seen")
        conds = load_tensors(d / "seen_conditions.safetensors").get("conditions")
        self.tasks = self._load_tasks(d, self.seen if isinstance(self.seen, list) else [])
        self._check_saved(meta_path, conds)
        self.seen_conditions = conds
        self.seconds = meta.get("seconds", {})
        return self

    @staticmethod
    def _load_tasks(d: Path, seen: list[str]) -> dict[str, Condition]:
        """The condition table saved beside cond_pdiff.json ({} for a generator saved before tables were saved).
        Rows are Condition dicts, or the Task dicts (name, description, examples, classes) older saves wrote."""
        path = d / TASKS_FILE
        if not path.exists():
            return {}
        try:
            rows = read_json(path)["tasks"]
            # both formats carry a description: a row without one is not a condition (Condition.from_dict is lenient)
            bad = [r for r in rows if not isinstance(r, dict) or "description" not in r]
            if bad:
                raise KeyError(f"rows without a description: {bad[:2]}")
            # Task dicts have no "seen": it is what this generator trained on
            tasks = [Condition.from_dict(r) if "seen" in r else _with_seen(Condition.from_dict(r), r["name"] in seen)
                     for r in rows]
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{path} is not a task table ({type(e).__name__}: {e}): the saved generator is "
                             "inconsistent — re-save it (CondPDiff.save) or re-fit") from None
        table = {t.name: t for t in tasks}
        if len(table) != len(tasks):
            raise ValueError(f"{path} names a task twice: the saved generator is inconsistent — re-save it "
                             "(CondPDiff.save) or re-fit")
        return table

    def _check_saved(self, meta_path: Path, conds: Any) -> None:
        """The seen tasks, their stored conditions, the task table and the denoiser must agree with one another."""
        bad = ": the saved generator is inconsistent — re-save it (CondPDiff.save) or re-fit"
        seen = self.seen
        if not isinstance(seen, list) or not all(isinstance(t, str) and t for t in seen) or not seen:
            raise ValueError(f"{meta_path}: 'seen' must be a non-empty list of task names, got {seen!r}{bad}")
        if len(set(seen)) != len(seen):
            raise ValueError(f"{meta_path} lists a seen task twice ({seen}){bad}")
        cond_path = meta_path.parent / "seen_conditions.safetensors"
        if not isinstance(conds, torch.Tensor) or conds.ndim != 2:
            raise ValueError(f"{cond_path} holds no (tasks, D) condition matrix{bad}")
        if len(seen) != len(conds):
            raise ValueError(f"{meta_path} lists {len(seen)} seen tasks but {cond_path} holds {len(conds)} seen "
                             f"conditions{bad}")
        if not torch.isfinite(conds).all():
            raise ValueError(f"{cond_path} contains NaN or Inf values{bad}")
        dcfg = self.pdiff.unet.cfg
        cond_dim, vocab = int(getattr(dcfg, "cond_dim", 0)), int(getattr(dcfg, "cond_vocab", 0))
        width = 1 if self.config.condition == "learnable" else (len(seen) if self.config.condition == "one_hot"
                                                                  else cond_dim)
        if conds.shape[1] != width or (not self.config.embeds and conds.shape[1] != (1 if vocab else cond_dim)) \
                or (vocab and vocab != len(seen)):
            raise ValueError(f"{cond_path} holds {conds.shape[1]}-d conditions for {len(seen)} tasks but the "
                             f"denoiser was trained with {cond_dim}-d conditions"
                             f"{f' over {vocab} task ids' if vocab else ''}{bad}")
        groups = getattr(self.pdiff.normaliser, "tasks", None)
        if isinstance(groups, torch.Tensor) and len(groups) != len(seen):
            raise ValueError(f"{meta_path} lists {len(seen)} seen tasks but the task normaliser holds statistics for "
                             f"{len(groups)}{bad}")
        missing = [t for t in seen if t not in self.tasks]
        if self.tasks and missing:
            raise ValueError(f"the seen tasks {missing} of {meta_path} are not in the task table "
                             f"{meta_path.parent / TASKS_FILE}{bad}")


def _with_seen(c: Condition, seen: bool) -> Condition:
    """The condition with ``seen`` as a generator saw it."""
    return c if c.seen == seen else replace(c, seen=seen)


def fit_or_load_cond(zoo: Any, config: CondPDiffConfig, directory: str | Path, *, cache_dir: str | Path | None = None,
                     progress: bool = True, device: DeviceLike = None) -> CondPDiff:
    """Load the conditional generator saved in ``directory`` if it matches ``config``; else fit and save."""
    d = Path(directory)
    if (d / "cond_pdiff.json").exists() and read_json(d / "cond_pdiff.json")["config"] == config.to_dict() \
            and (d / "denoiser_weights.safetensors").exists():
        return CondPDiff.load(d, cache_dir=cache_dir, device=device)
    with progress_label(d.name):  # bars say which generator they train
        gen = CondPDiff(config, cache_dir=cache_dir, device=device).fit(zoo, run_dir=d / "checkpoints",
                                                                         progress=progress)
    gen.save(d)
    return gen
