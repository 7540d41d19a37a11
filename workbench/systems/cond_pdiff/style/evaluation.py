"""Evaluation of style-conditioned LoRA generation: metrics per style against honest baselines, style
interpolation in weight and latent space, the style-continuous generalisation test, and diffusion trajectories.

Metrics (FID needs Inception weights that are not offline): *style distance* — relative Gram-matrix distance in
pretrained EfficientNet-Lite0 features to the style's reference (the exact filtered content for algorithmic styles,
the style image otherwise); *content preservation* — SSIM and PSNR to the content; *PSNR to the exact algorithmic
target* where one exists. Baselines: the original LoRA checkpoints, their soup per style (the float64 weight average
of :func:`workbench.evaluation.baselines.soup`), and the base network without LoRA (the paper's "no-LoRA").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from workbench.core.params import ParamSpec
from workbench.core.progress import tqdm
from workbench.data import TaskData
from workbench.evaluation.baselines import soup
from workbench.evaluation.memorisation import interpolate_weights
from workbench.systems.cond_pdiff.generator import CondPDiff, CondPDiffConfig
from workbench.systems.cond_pdiff.style.features import gram_distance, psnr, ssim
from workbench.systems.cond_pdiff.style.images import ALGORITHMIC_STYLES
from workbench.systems.cond_pdiff.style.zoo import StyleZoo
from workbench.zoo.protocol import Condition, condition_names

__all__ = ["StyleResult", "style_metrics", "style_evaluation", "summary", "interpolation_frame",
           "monotonic_fraction", "style_path", "ContinuousStyles", "continuous_generalisation", "style_trajectory",
           "interpolate_style_latent"]

METHODS = ("original", "soup", "generated", "no_lora")


def style_metrics(zoo: StyleZoo, style: str, images: torch.Tensor, content: torch.Tensor | None = None
                  ) -> dict[str, float]:
    """Mean metrics of stylised images (V, N, 3, H, W) made from ``content`` (default: the evaluation patches)."""
    content = zoo.eval_content if content is None else content
    flat = images.reshape(-1, *images.shape[-3:])
    rep = content.repeat(len(images), 1, 1, 1)
    out = {"style_distance": float(zoo.style_distance(style, flat, rep).mean()),
           "ssim_content": float(ssim(flat, rep).mean()), "psnr_content": float(psnr(flat, rep).mean())}
    target = zoo.target(style, rep)
    out["psnr_to_target"] = float(psnr(flat, target).mean()) if target is not None else float("nan")
    return out


@dataclass
class StyleResult:
    """Per style and method: the metrics (long table), plus the generated vectors per style."""

    table: pd.DataFrame
    generated: dict[str, torch.Tensor]

    def wide(self, metric: str) -> pd.DataFrame:
        """One metric as a style × method table."""
        return self.table.pivot(index="style", columns="method", values=metric)[list(METHODS)]


def _pick(n_total: int, k: int) -> torch.Tensor:
    return torch.linspace(0, n_total - 1, min(k, n_total)).round().long()


def style_evaluation(zoo: StyleZoo, gen: CondPDiff, *, n_samples: int = 8, n_original: int = 8, seed: int = 0,
                     steps: int = 50, progress: bool = False) -> StyleResult:
    """Every style: original checkpoints (``n_original`` evenly spaced), their soup, ``n_samples`` generated LoRAs
    conditioned on the style's reference image, and the no-LoRA base network."""

    rows, generated = [], {}
    no_lora = zoo.apply(zoo.no_lora())
    for i, style in enumerate(tqdm(zoo.styles, desc="styles", disable=not progress)):
        orig = zoo.vectors([style])
        generated[style] = gen.sample(style, n_samples, seed=seed + i, steps=steps)
        sets = {"original": orig[_pick(len(orig), n_original)], "soup": soup(orig),
                "generated": generated[style]}
        for method, vecs in sets.items():
            rows.append({"style": style, "method": method, **style_metrics(zoo, style, zoo.apply(vecs))})
        rows.append({"style": style, "method": "no_lora", **style_metrics(zoo, style, no_lora)})
    return StyleResult(pd.DataFrame(rows), generated)


def summary(res: StyleResult) -> dict[str, dict[str, float]]:
    """Style-averaged metrics per method; PSNR to target over the algorithmic styles only."""
    t = res.table
    algo = t["style"].isin(list(ALGORITHMIC_STYLES))
    out = {}
    for metric in ("style_distance", "ssim_content", "psnr_content"):
        out[metric] = {m: float(t.loc[t["method"] == m, metric].mean()) for m in METHODS}
    out["psnr_to_target"] = {m: float(t.loc[algo & (t["method"] == m), "psnr_to_target"].mean()) for m in METHODS}
    return out


# -- interpolation -------------------------------------------------------------------------------------------------
def interpolate_style_latent(gen: CondPDiff, v1: torch.Tensor, v2: torch.Tensor, lambdas: Sequence[float],
                             styles: tuple[str, str] | None = None) -> torch.Tensor:
    """Interpolate two style vectors in the generator's AE latent space and decode (with per-task normalisation
    each end keeps its own style's statistics, so ``styles`` must name them)."""
    return gen.interpolate_latent(v1, v2, lambdas, styles)


def style_path(gen: CondPDiff, styles: tuple[str, str], v1: torch.Tensor, v2: torch.Tensor, lambdas: Sequence[float],
               space: str) -> torch.Tensor:
    """Vectors along λ between two style LoRAs, in ``space`` "weight" (θ(λ) = (1 − λ) θ₁ + λ θ₂) or "latent"."""
    if space == "weight":
        return interpolate_weights(v1, v2, lambdas)
    if space == "latent":
        return interpolate_style_latent(gen, v1, v2, lambdas, styles)
    raise ValueError(f"space must be 'weight' or 'latent', got {space!r}")


def interpolation_frame(zoo: StyleZoo, gen: CondPDiff, pairs: Sequence[tuple[str, str]], vectors: dict[str, torch.Tensor],
                        lambdas: Sequence[float], *, spaces: Sequence[str] = ("weight", "latent"),
                        content: torch.Tensor | None = None) -> tuple[pd.DataFrame, dict]:
    """Style distances to both ends along θ(λ) for every pair, space and content image.

    Two readings of "distance to both ends": ``d_first``/``d_second`` — Gram distance to the two styles' references
    (the exact filtered content, or the style image) — and ``e_first``/``e_second`` — Gram distance to the two
    endpoint LoRAs' own outputs on the same content, which isolates the path from how well each end matches its
    style. Returns the long frame (pair, space, content, λ, and those four) and the images
    {(pair, space): (L, N, 3, H, W)}."""
    content = zoo.eval_content if content is None else content
    rows, images = [], {}
    for a, b in pairs:
        for space in spaces:
            path = style_path(gen, (a, b), vectors[a], vectors[b], lambdas, space)
            imgs = zoo.apply(path, content)
            images[(f"{a} → {b}", space)] = imgs
            flat = imgs.reshape(-1, *imgs.shape[-3:])
            rep = content.repeat(len(path), 1, 1, 1)
            da = zoo.style_distance(a, flat, rep).reshape(len(path), -1)
            db = zoo.style_distance(b, flat, rep).reshape(len(path), -1)
            ends = zoo.apply(torch.stack([vectors[a], vectors[b]]), content)
            ea = gram_distance(zoo.features(), flat, ends[0].repeat(len(path), 1, 1, 1)).reshape(len(path), -1)
            eb = gram_distance(zoo.features(), flat, ends[1].repeat(len(path), 1, 1, 1)).reshape(len(path), -1)
            for li, lam in enumerate(lambdas):
                for c in range(len(content)):
                    rows.append({"pair": f"{a} → {b}", "space": space, "content": c, "lambda": float(lam),
                                 "d_first": float(da[li, c]), "d_second": float(db[li, c]),
                                 "e_first": float(ea[li, c]), "e_second": float(eb[li, c])})
    return pd.DataFrame(rows), images


def monotonic_fraction(frame: pd.DataFrame, tolerance: float = 0.02, by: Sequence[str] = ("space",),
                       reference: str = "styles") -> pd.Series:
    """Per space (or per ``by`` columns, e.g. ``("space", "pair")``): the fraction of (pair, content) curves whose
    distance to the first end never falls and to the second never rises along λ, allowing steps back of
    ``tolerance`` × the curve's range (numerical jitter). ``reference="styles"``: distances to the styles'
    references; ``"ends"``: to the endpoint LoRAs' outputs (see :func:`interpolation_frame`)."""
    first, second = {"styles": ("d_first", "d_second"), "ends": ("e_first", "e_second")}[reference]

    def ok(g: pd.DataFrame) -> bool:
        g = g.sort_values("lambda")
        d1, d2 = g[first].to_numpy(), g[second].to_numpy()
        t1 = tolerance * max(np.ptp(d1), 1e-12)
        t2 = tolerance * max(np.ptp(d2), 1e-12)
        return bool((np.diff(d1) >= -t1).all() and (np.diff(d2) <= t2).all())

    keys = ["space", "pair", "content"]
    flags = pd.Series({k: ok(g) for k, g in frame.groupby(keys)}, dtype=float)
    flags.index.names = keys
    return flags.groupby(level=list(by)).mean()


# -- the style-continuous generalisation test -----------------------------------------------------------------------
class ContinuousStyles:
    """A style-continuous zoo: for each λ on a grid, the checkpoints of two styles interpolated pairwise,
    θ_λ = (1 − λ) θ_A + λ θ_B, with the soup's output on the reference patch as the λ's condition image and its
    output on the evaluation patches as the λ's reference. A zoo (:class:`workbench.zoo.protocol.ParameterZoo`) whose
    conditions are the λs, the ``heldout`` ones unseen."""

    def __init__(self, zoo: StyleZoo, pair: tuple[str, str], lambdas: Sequence[float], per_lambda: int = 20,
                 heldout: Sequence[float] = ()) -> None:
        self.zoo, self.pair = zoo, tuple(pair)
        self.lambdas = [round(float(x), 4) for x in lambdas]
        self.heldout = {round(float(h), 4) for h in heldout}
        unknown = self.heldout - set(self.lambdas)
        if unknown:
            raise ValueError(f"held-out λs {sorted(unknown)} are not on the grid {self.lambdas}")
        va, vb = zoo.vectors([pair[0]]), zoo.vectors([pair[1]])
        k = min(per_lambda, len(va), len(vb))
        va, vb = va[-k:], vb[-k:]
        self._vectors = {self.name(lam): (1 - lam) * va + lam * vb for lam in self.lambdas}
        soups = torch.cat([soup(v) for v in self._vectors.values()])
        self._condition = zoo.apply(soups, zoo.reference_content[None])[:, 0]
        self._reference = zoo.apply(soups)  # (L, N, 3, H, W)

    @staticmethod
    def name(lam: float) -> str:
        """The task name of one λ."""
        return f"λ={lam:.2f}"

    @property
    def spec(self) -> ParamSpec:
        """The style zoo's generated tensors."""
        return self.zoo.spec

    @property
    def conditions(self) -> list[Condition]:
        """One style condition per λ (its condition image attached): the training λs, then the held-out ones."""
        a, b = self.pair
        conds = [Condition(name=self.name(lam), kind="style", seen=lam not in self.heldout,
                           description=f"{a} → {b} at λ = {lam:.2f}", image=self._condition[i])
                 for i, lam in enumerate(self.lambdas)]
        return [c for c in conds if c.seen] + [c for c in conds if not c.seen]

    def model(self) -> torch.nn.Module:
        """The style zoo's adapted base network."""
        return self.zoo.model()

    def vectors(self, condition: str | Sequence[str] | None = None) -> torch.Tensor:
        """Checkpoint vectors of the named λs (default: the training λs), λ after λ."""
        return torch.cat([self._vectors[n] for n in condition_names(self, condition)])

    def data(self, condition: str | None = None) -> TaskData:
        """Not a classification zoo (see :meth:`StyleZoo.data`)."""
        return self.zoo.data(condition)

    def accuracies(self, condition: str | None = None, split: str = "test") -> np.ndarray:
        """Not a classification zoo (see :meth:`StyleZoo.accuracies`)."""
        return self.zoo.accuracies(condition, split)

    def condition_images(self, names: Sequence[str]) -> torch.Tensor:
        """Condition images of the named λs."""
        return self._condition[[self.index(n) for n in names]]

    def index(self, name: str) -> int:
        """Position of a λ's name on the grid."""
        return [self.name(x) for x in self.lambdas].index(name)

    def soup(self, name: str) -> torch.Tensor:
        """The mean vector (float64 average) of one λ."""
        return soup(self._vectors[name])[0]

    def distance(self, name: str, images: torch.Tensor) -> torch.Tensor:
        """Style distance of stylised evaluation patches (V, N, 3, H, W) to the λ's reference, per vector."""
        ref = self._reference[self.index(name)]
        flat = images.reshape(-1, *images.shape[-3:])
        return gram_distance(self.zoo.features(), flat, ref.repeat(len(images), 1, 1, 1)).reshape(len(images), -1
                                                                                                   ).mean(1)


def continuous_generalisation(zoo: StyleZoo, config: CondPDiffConfig, *, pair: tuple[str, str], lambdas: Sequence[float],
                              heldout: Sequence[float], per_lambda: int = 20, n_samples: int = 4, seed: int = 0,
                              steps: int = 50, progress: bool = False) -> tuple[pd.DataFrame, CondPDiff]:
    """Fit a style-image-conditioned generator on the training λs, condition on the held-out λs' images, and
    compare each λ's generated LoRAs with the soup of the nearest training λ (both against the λ's reference)."""

    cs = ContinuousStyles(zoo, pair, lambdas, per_lambda, heldout)
    held = cs.heldout
    gen = CondPDiff(config).fit(cs, progress=progress)  # on the seen (training) λs
    rows = []
    for i, lam in enumerate(cs.lambdas):
        name = cs.name(lam)
        vecs, near = gen.sample_image(cs.condition_images([name])[0], n_samples, seed=seed + i, steps=steps)
        nearest = min((x for x in cs.lambdas if x not in held), key=lambda x: (abs(x - lam), x))
        rows.append({"lambda": lam, "split": "held out" if lam in held else "train",
                     "generated": float(cs.distance(name, zoo.apply(vecs)).mean()),
                     "nearest_train": float(cs.distance(name, zoo.apply(cs.soup(cs.name(nearest))[None])).mean()),
                     "nearest_train_lambda": nearest, "stats_from": near})
    return pd.DataFrame(rows).set_index("lambda"), gen


# -- diffusion trajectories ---------------------------------------------------------------------------------------
def style_trajectory(zoo: StyleZoo, gen: CondPDiff, style: str, *, n: int = 3, steps: int = 50, seed: int = 0, every: int = 5
                     ) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Decoded vectors along the DDIM trajectories of ``n`` seeds conditioned on ``style``: their style distance
    per step, and 2-D PCA coordinates (fitted on all original checkpoints) of the trajectories and of the style's
    originals. Returns (trajectory frame: seed, step, t, x, y, style_distance), originals' xy, per-step summary."""
    allv = zoo.vectors()
    mean = allv.mean(0)
    _, _, vt = torch.linalg.svd(allv - mean, full_matrices=False)
    proj = lambda v: ((v - mean) @ vt[:2].T).numpy()  # noqa: E731
    cond = gen.condition([style])[0]
    rows = []
    for s in range(n):
        for k, st in enumerate(gen.condition_trajectory(cond, 1, seed=seed + s, steps=steps)):
            if k % every and k != steps - 1:
                continue
            v = gen.latents_to_vectors(st.xt.clone(), style)
            xy = proj(v)[0]
            d = float(zoo.style_distance(style, zoo.apply(v)[0], zoo.eval_content).mean())
            rows.append({"seed": seed + s, "step": k + 1, "t": int(st.t), "x": float(xy[0]), "y": float(xy[1]),
                         "style_distance": d})
    frame = pd.DataFrame(rows)
    per_step = frame.groupby("step")[["t", "style_distance"]].mean()
    return frame, proj(zoo.vectors([style])), per_step


# -- image grids for the notebook ---------------------------------------------------------------------------------
def gallery(zoo: StyleZoo, res: StyleResult, content_index: int = 0, n_generated: int = 2
            ) -> tuple[torch.Tensor, list[str], list[str]]:
    """Per style one row: reference image, exact target (grey where none), no-LoRA, an original checkpoint, the
    soup and ``n_generated`` generated LoRAs, all on one evaluation patch. Returns (images, row and column labels)."""
    c = zoo.eval_content[content_index:content_index + 1]
    cols = ["reference", "exact target", "content", "no-LoRA", "original", "soup"] + \
        [f"generated {i + 1}" for i in range(n_generated)]
    no_lora = zoo.apply(zoo.no_lora(), c)[0, 0]
    rows = []
    for s in zoo.styles:
        orig = zoo.vectors([s])
        target = zoo.target(s, c)
        vecs = torch.cat([orig[-1:], soup(orig), res.generated[s][:n_generated]])
        out = zoo.apply(vecs, c)[:, 0]
        rows.append(torch.stack([zoo.reference(s), target[0] if target is not None else torch.full_like(c[0], 0.5),
                                 c[0], no_lora, *out]))
    return torch.stack(rows), list(zoo.styles), cols


def interpolation_strips(images: dict, content_index: int = 0) -> tuple[torch.Tensor, list[str]]:
    """One strip over λ per (pair, space) of :func:`interpolation_frame`'s images, on one content patch."""
    keys = list(images)
    return torch.stack([images[k][:, content_index] for k in keys]), [f"{p} ({s})" for p, s in keys]
