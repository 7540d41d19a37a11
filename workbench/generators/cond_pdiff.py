"""Cond P-Diff: task-conditioned generation of LoRA parameters.

Task normalisation (each task's checkpoints z-scored with their own statistics) → parameter autoencoder → latent
diffusion whose denoiser receives a condition per task: an embedding of the task description (and two examples) by
a text encoder, a one-hot code, or a learnable code. Condition dropout in training enables classifier-free guidance
at sampling (beyond the paper). For a task never seen in training, the condition comes from its text and the
normalisation statistics from the seen task whose condition is nearest (cosine) — the only statistics there are.

The vision setting conditions on a *style image* instead (``condition="style_image"``): the zoo provides each
training style's reference image (``zoo.condition_images(names)``), a pretrained image encoder embeds it, and
:meth:`CondPDiff.sample_image` generates for any image, seen or not.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from ..atomic_io import atomic_write_json, load_tensors, read_json, save_tensors
from ..conditions import ImageEncoder, TextEncoder, make_image_encoder, make_text_encoder, one_hot
from ..lora import Task
from .pdiff import PDiff, PDiffConfig

__all__ = ["CondPDiffConfig", "CondPDiff", "CONDITIONS", "fit_or_load_cond"]

CONDITIONS = ("one_hot", "learnable", "description", "description+examples", "style_image")


@dataclass(frozen=True)
class CondPDiffConfig:
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

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        d = asdict(self)
        d["pdiff"] = self.pdiff.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CondPDiffConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown Cond P-Diff config keys {sorted(unknown)}")
        if "pdiff" in d:
            d["pdiff"] = PDiffConfig.from_dict(d["pdiff"])
        return cls(**d)


class CondPDiff:
    """Fit on a LoRA zoo's seen tasks; sample LoRA + head vectors for any task (or free text)."""

    def __init__(self, config: CondPDiffConfig | None = None, *, encoder: TextEncoder | None = None,
                 cache_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 image_encoder: ImageEncoder | None = None) -> None:
        self.config = config or CondPDiffConfig()
        self.device = device
        self._encoder = encoder
        self._image_encoder = image_encoder
        self.cache_dir = cache_dir
        self.pdiff = PDiff(self.config.pdiff, device=device)
        self.seen: list[str] = []
        self.seen_conditions: torch.Tensor | None = None  # (T, D) condition of every seen task
        self.seconds: dict[str, float] = {}

    @property
    def encoder(self) -> TextEncoder:
        """The text encoder (loaded on first use)."""
        if self._encoder is None:
            self._encoder = make_text_encoder(self.config.text_encoder, self.cache_dir)
        return self._encoder

    @property
    def image_encoder(self) -> ImageEncoder:
        """The image encoder (loaded on first use)."""
        if self._image_encoder is None:
            self._image_encoder = make_image_encoder(self.config.image_encoder)
        return self._image_encoder

    # -- conditions ----------------------------------------------------------------------------------
    def text_of(self, task: Task) -> str:
        """The text a task is conditioned on."""
        return task.text(with_examples=self.config.condition == "description+examples")

    def condition(self, tasks: Sequence[Task | str]) -> torch.Tensor:
        """Condition rows for tasks: text embeddings, one-hot rows or learnable-table ids (seen tasks only for
        the last two); for image conditions, the stored embeddings of seen styles (by name)."""
        c = self.config.condition
        if self.config.uses_text:
            return self.encoder.encode([self.text_of(t) for t in tasks])
        names = [t if isinstance(t, str) else t.name for t in tasks]
        if self.config.uses_image:
            missing = [n for n in names if n not in self.seen]
            if missing:
                raise ValueError(f"no stored style image for {missing}; condition on an image with sample_image()")
            return self.seen_conditions[[self.seen.index(n) for n in names]]
        missing = [t.name for t in tasks if t.name not in self.seen]
        if missing:
            raise ValueError(f"a {c} condition exists only for the training tasks; {missing} are unseen — "
                             "use a text condition ('description' or 'description+examples') for unseen tasks")
        ids = torch.as_tensor([self.seen.index(t.name) for t in tasks])
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

    # -- fitting -------------------------------------------------------------------------------------
    def fit(self, zoo, *, run_dir: str | Path | None = None, progress: bool = True,
            tasks: Sequence[str] | None = None) -> "CondPDiff":
        """Fit the task-normalised autoencoder and the conditional latent diffusion on the zoo's seen tasks
        (or ``tasks``, a subset of them)."""
        t0 = time.perf_counter()
        self.seen = list(tasks if tasks is not None else zoo.config.tasks)
        vectors = zoo.vectors(self.seen)
        ids = torch.cat([torch.full((len(zoo.vectors([t])),), i) for i, t in enumerate(self.seen)])
        if self.config.uses_image:
            self.seen_conditions = self.image_encoder.encode(zoo.condition_images(self.seen))
        else:
            table = zoo.config.task_table()
            self.seen_conditions = self.condition([table[t] for t in self.seen])
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
        self.seconds = {**self.pdiff.seconds, "total": time.perf_counter() - t0}
        return self

    # -- sampling ------------------------------------------------------------------------------------
    def _conditioning(self, cond_row: torch.Tensor, n: int, guidance_scale: float | None) -> dict[str, Any]:
        """The denoiser's condition arguments for ``n`` samples of one condition row (with guidance settings)."""
        gs = self.config.guidance_scale if guidance_scale is None else guidance_scale
        null = self.pdiff.null_cond
        if gs != 1.0 and null is None:
            raise ValueError("guidance needs a generator trained with cond_dropout > 0")
        return {"cond": cond_row.reshape(1, -1).expand(n, -1), "guidance_scale": gs,
                "null_cond": None if null is None else null.reshape(1, -1)}

    def _sample(self, cond_row: torch.Tensor, stats_task: str, n: int, *, seed: int, sampler: str, steps: int,
                guidance_scale: float | None) -> torch.Tensor:
        groups = torch.full((n,), self.seen.index(stats_task))
        return self.pdiff.sample(n, sampler=sampler, steps=steps, seed=seed, groups=groups,
                                 **self._conditioning(cond_row, n, guidance_scale))

    def sample(self, task: Task | str, n: int, *, seed: int = 0, sampler: str = "ddim", steps: int = 50,
               guidance_scale: float | None = None) -> torch.Tensor:
        """``n`` parameter vectors for ``task`` (seen or unseen; a seen style by name for image conditions)."""
        name = task if isinstance(task, str) else task.name
        cond = self.condition([task])
        stats = name if name in self.seen else self.nearest_seen(cond)[0]
        return self._sample(cond[0], stats, n, seed=seed, sampler=sampler, steps=steps, guidance_scale=guidance_scale)

    def sample_image(self, image: torch.Tensor, n: int = 8, *, seed: int = 0, sampler: str = "ddim", steps: int = 50,
                     guidance_scale: float | None = None) -> tuple[torch.Tensor, str]:
        """Vectors conditioned on a style image (3, H, W) in [0, 1]; also returns the nearest seen style."""
        if not self.config.uses_image:
            raise ValueError("image-conditioned sampling needs condition='style_image'")
        cond = self.image_encoder.encode(image)
        near = self.nearest_seen(cond)[0]
        return self._sample(cond[0], near, n, seed=seed, sampler=sampler, steps=steps,
                            guidance_scale=guidance_scale), near

    def condition_trajectory(self, cond_row: torch.Tensor, n: int = 1, *, seed: int = 0, steps: int = 50,
                             guidance_scale: float | None = None):
        """DDIM trajectory (every intermediate state) for one condition row, e.g. ``condition([style])[0]``."""
        return self.pdiff.trajectory(n, sampler="ddim", steps=steps, seed=seed,
                                     **self._conditioning(cond_row, n, guidance_scale))

    def sample_text(self, description: str, examples: Sequence[str] = (), n: int = 8, *, seed: int = 0,
                    sampler: str = "ddim", steps: int = 50, guidance_scale: float | None = None
                    ) -> tuple[torch.Tensor, str]:
        """Vectors for a free-text task description (and examples); also returns the nearest seen task."""
        if not self.config.uses_text:
            raise ValueError("free-text sampling needs a text condition")
        # the same text format as the training tasks' conditions
        task = Task("free text", description, tuple(examples), ((0,), (1,)))
        cond = self.encoder.encode([self.text_of(task)])
        near = self.nearest_seen(cond)[0]
        return self._sample(cond[0], near, n, seed=seed, sampler=sampler, steps=steps,
                            guidance_scale=guidance_scale), near

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """p-diff weights and normalisers, plus the seen tasks and their conditions (safetensors, JSON)."""
        d = Path(directory)
        self.pdiff.save(d)
        save_tensors(d / "seen_conditions.safetensors", {"conditions": self.seen_conditions})
        atomic_write_json(d / "cond_pdiff.json", {"config": self.config.to_dict(), "seen": self.seen,
                                                  "seconds": self.seconds})
        return d

    @classmethod
    def load(cls, directory: str | Path, *, encoder: TextEncoder | None = None,
             cache_dir: str | Path | None = None, image_encoder: ImageEncoder | None = None) -> "CondPDiff":
        """Inverse of :meth:`save`."""
        d = Path(directory)
        meta = read_json(d / "cond_pdiff.json")
        self = cls(CondPDiffConfig.from_dict(meta["config"]), encoder=encoder, cache_dir=cache_dir,
                   image_encoder=image_encoder)
        self.pdiff = PDiff.load(d)
        self.seen = list(meta["seen"])
        self.seen_conditions = load_tensors(d / "seen_conditions.safetensors")["conditions"]
        self.seconds = meta.get("seconds", {})
        return self


def fit_or_load_cond(zoo, config: CondPDiffConfig, directory: str | Path, *, cache_dir: str | Path | None = None,
                     progress: bool = True) -> CondPDiff:
    """Load the conditional generator saved in ``directory`` if it matches ``config``; else fit and save."""
    d = Path(directory)
    if (d / "cond_pdiff.json").exists() and read_json(d / "cond_pdiff.json")["config"] == config.to_dict() \
            and (d / "denoiser_weights.safetensors").exists():
        return CondPDiff.load(d, cache_dir=cache_dir)
    gen = CondPDiff(config, cache_dir=cache_dir).fit(zoo, run_dir=d / "checkpoints", progress=progress)
    gen.save(d)
    return gen
