"""Is a generator memorising? Wrong-prediction IoU, exact weight-space nearest neighbours, the accuracy-vs-novelty
plane, t-SNE/UMAP embeddings, diffusion trajectories and interpolation."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from workbench.core.device import DeviceLike, resolve_device
from workbench.evaluation.baselines import finetuned_members, noise_added, per_position_gaussian, soup
from workbench.evaluation.evaluate import EvalResult, MemberEvaluator
from workbench.zoo.protocol import ParameterZoo, check_zoo


def median(t: torch.Tensor) -> float:
    """The median as numpy/pandas define it (the mean of the two middle values for even counts)."""
    return float(np.median(t.detach().double().cpu().numpy()))


__all__ = [
    "median",
    "wrong_iou",
    "max_iou_to",
    "iou_summary",
    "pairwise_distances",
    "nearest_neighbours",
    "novelty_frame",
    "novelty_matched_accuracy",
    "embed",
    "interpolate_weights",
    "interpolate_latent",
    "trajectory_frame",
    "memorisation_analysis",
    "MemorisationResult",
    "reading",
    "interpolation_accuracy",
]


def _wrong(x: EvalResult | torch.Tensor) -> torch.Tensor:
    return (x.wrong() if isinstance(x, EvalResult) else x).double()


def wrong_iou(a: EvalResult | torch.Tensor, b: EvalResult | torch.Tensor) -> torch.Tensor:
    """p-diff eq. 7: |W_i ∩ W_j| / |W_i ∪ W_j| for the wrong-prediction sets of every pair (N_a, N_b).

    Counts are exact (float64 holds integers exactly); two models that are never wrong have IoU 1."""
    wa, wb = _wrong(a), _wrong(b)
    if wa.shape[1] != wb.shape[1]:
        raise ValueError(f"the two sets were evaluated on different examples ({wa.shape[1]} vs {wb.shape[1]})")
    inter = wa @ wb.T
    union = wa.sum(1, keepdim=True) + wb.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def max_iou_to(a: EvalResult | torch.Tensor, reference: EvalResult | torch.Tensor, exclude_self: bool = False
               ) -> torch.Tensor:
    """For each model of ``a``, its highest IoU to any model of ``reference`` (its nearest neighbour in
    prediction space); ``exclude_self`` when ``a`` is ``reference`` (originals → nearest *other* original)."""
    m = wrong_iou(a, reference)
    if exclude_self:
        if m.shape[0] != m.shape[1]:
            raise ValueError("exclude_self needs a set compared with itself")
        m = m.clone()
        m.fill_diagonal_(-1.0)
    return m.max(1).values


def _offdiag_mean(m: torch.Tensor) -> float:
    n = m.shape[0]
    if n < 2:
        return float("nan")
    return float((m.sum() - m.diagonal().sum()) / (n * (n - 1)))


def iou_summary(original: EvalResult, others: Mapping[str, EvalResult]) -> pd.DataFrame:
    """One row per set: mean IoU within the set, mean IoU to the originals, and the median/mean of each model's
    max IoU to its nearest original (for the originals: nearest *other* original)."""
    rows = []
    within_o = wrong_iou(original, original)
    nn_o = max_iou_to(original, original, exclude_self=True)
    rows.append({"set": "original", "n": len(original), "iou_within": _offdiag_mean(within_o),
                 "iou_to_originals_mean": _offdiag_mean(within_o),
                 "max_iou_to_original_median": median(nn_o), "max_iou_to_original_mean": float(nn_o.mean())})
    for name, res in others.items():
        cross = wrong_iou(res, original)
        nn = cross.max(1).values
        rows.append({"set": name, "n": len(res), "iou_within": _offdiag_mean(wrong_iou(res, res)),
                     "iou_to_originals_mean": float(cross.mean()),
                     "max_iou_to_original_median": median(nn), "max_iou_to_original_mean": float(nn.mean())})
    return pd.DataFrame(rows).set_index("set")


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """Exact distances in float64: ``l2`` without the matmul shortcut (which returns 0 for close checkpoints),
    or ``cosine`` distance 1 − cos."""
    a, b = a.double(), b.double()
    if metric == "l2":
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    if metric == "cosine":
        an = a / a.norm(dim=1, keepdim=True).clamp_min(1e-300)
        bn = b / b.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return (1 - an @ bn.T).clamp_min(0)
    raise ValueError(f"unknown metric {metric!r}: use 'l2' or 'cosine'")


def nearest_neighbours(a: torch.Tensor, reference: torch.Tensor, metric: str = "l2", exclude_self: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each row of ``a``'s nearest row in ``reference``."""
    d = pairwise_distances(a, reference, metric)
    if exclude_self:
        d = d.clone()
        d.fill_diagonal_(float("inf"))
    dist, idx = d.min(1)
    return dist, idx


def novelty_frame(original_vectors: torch.Tensor, original_test: EvalResult,
                  sets: Mapping[str, tuple[torch.Tensor, EvalResult]]) -> pd.DataFrame:
    """One row per model: method, test accuracy, max IoU to the nearest original, L2 to the nearest original.

    The originals are measured against the *other* originals, so every method sits on the same scale."""
    rows = []
    nn_iou = max_iou_to(original_test, original_test, exclude_self=True)
    nn_l2, _ = nearest_neighbours(original_vectors, original_vectors, exclude_self=True)
    for i in range(len(original_test)):
        rows.append({"method": "original", "accuracy": float(original_test.accuracy[i]),
                     "max_iou_to_original": float(nn_iou[i]), "l2_to_nearest_original": float(nn_l2[i])})
    for name, (vecs, res) in sets.items():
        iou = max_iou_to(res, original_test)
        l2, _ = nearest_neighbours(vecs, original_vectors)
        for i in range(len(res)):
            rows.append({"method": name, "accuracy": float(res.accuracy[i]), "max_iou_to_original": float(iou[i]),
                         "l2_to_nearest_original": float(l2[i])})
    return pd.DataFrame(rows)


def novelty_matched_accuracy(frame: pd.DataFrame, threshold: float | None = None) -> tuple[pd.DataFrame, float]:
    """Per method, the mean accuracy of its models whose max IoU to the nearest original is at most ``threshold``
    (default: the originals' median IoU to their nearest other original — "as novel as a typical member")."""
    if threshold is None:
        threshold = float(frame.loc[frame["method"] == "original", "max_iou_to_original"].median())
    rows = []
    for method, g in frame.groupby("method", sort=False):
        novel = g[g["max_iou_to_original"] <= threshold]
        rows.append({"method": method, "n": len(g), "n_novel": len(novel),
                     "fraction_novel": len(novel) / len(g) if len(g) else float("nan"),
                     "novel_mean_accuracy": float(novel["accuracy"].mean()) if len(novel) else float("nan"),
                     "all_mean_accuracy": float(g["accuracy"].mean())})
    return pd.DataFrame(rows).set_index("method"), threshold


def embed(groups: Mapping[str, torch.Tensor], method: str = "tsne", seed: int = 0, perplexity: float = 30.0
          ) -> pd.DataFrame:
    """2-D embedding of several sets of vectors together (t-SNE, UMAP or PCA), seeded; columns x, y, group."""
    names = list(groups)
    x = torch.cat([groups[n].reshape(len(groups[n]), -1).double() for n in names]).numpy()
    labels = np.concatenate([[n] * len(groups[n]) for n in names])
    # standardise per coordinate so no single layer's scale dominates the neighbourhoods
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    if method == "pca":
        # imported here: scikit-learn takes ~2 s to import and only this function needs it
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(x)
    elif method == "tsne":
        # imported here: scikit-learn takes ~2 s to import and only this function needs it
        from sklearn.manifold import TSNE

        perp = min(perplexity, max(2.0, (len(x) - 1) / 3))
        xy = TSNE(n_components=2, perplexity=perp, random_state=seed, init="pca").fit_transform(x)
    elif method == "umap":
        # imported here: umap takes ~5 s to import (numba) and only UMAP embeddings need it
        import umap

        xy = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1)).fit_transform(x)
    else:
        raise ValueError(f"unknown embedding {method!r}: use 'tsne', 'umap' or 'pca'")
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "group": labels})


def interpolate_weights(v1: torch.Tensor, v2: torch.Tensor, lambdas: Sequence[float]) -> torch.Tensor:
    """θ(λ) = (1 − λ) θ₁ + λ θ₂ for each λ, (len(lambdas), P)."""
    lam = torch.as_tensor(list(lambdas), dtype=torch.float64)[:, None]
    return ((1 - lam) * v1.double()[None] + lam * v2.double()[None]).float()


def interpolate_latent(generator, v1: torch.Tensor, v2: torch.Tensor, lambdas: Sequence[float],
                       groups: tuple[int, int] | None = None) -> torch.Tensor:
    """Encode both models with the generator's autoencoder, interpolate the latents linearly, decode.

    ``groups`` names each end's normalisation statistics (per-task normalisers): each end is encoded with its own,
    and decoded vectors are un-normalised with the statistics interpolated by the same λ."""
    g = None if groups is None else torch.as_tensor(groups)
    z = generator.encode(torch.stack([v1, v2]), g)
    lam = torch.as_tensor(list(lambdas), dtype=z.dtype).view(-1, *([1] * (z.ndim - 1)))
    zl = (1 - lam) * z[0:1] + lam * z[1:2]
    if g is None:
        return generator.decode(zl)
    a, b = (generator.decode(zl, torch.full((len(zl),), int(k))) for k in g)
    lam = lam.reshape(-1, 1).to(a.dtype)
    return (1 - lam) * a + lam * b  # the inverse normalisation is affine: this mixes the two ends' statistics


def trajectory_frame(generator, n: int = 4, *, steps: int = 50, seed: int = 0, every: int = 1) -> tuple[pd.DataFrame, torch.Tensor]:
    """Decoded parameter vectors along DDIM trajectories of ``n`` seeds (rows: seed, step, t) and the vectors."""
    rows, vecs = [], []
    for s in range(n):
        for k, st in enumerate(generator.trajectory(1, sampler="ddim", steps=steps, seed=seed + s)):
            if k % every and k != steps - 1:
                continue
            vecs.append(generator.latents_to_vectors(st.xt.clone())[0])
            rows.append({"seed": seed + s, "step": k + 1, "t": st.t})
    return pd.DataFrame(rows), torch.stack(vecs)


class MemorisationResult:
    """Everything the memorisation notebook and benchmark report, for one zoo and one generator."""

    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)

    def keys(self) -> list[str]:
        return list(self.__dict__)


def memorisation_analysis(zoo: ParameterZoo, generator, *, n_samples: int = 100, steps: int = 50, seed: int = 0,
                          noise_sigma: float = 0.05, finetune_steps: int = 10, threshold: float | None = None,
                          device: DeviceLike = None) -> MemorisationResult:
    """Sample, build every baseline, evaluate, and measure novelty in prediction space (IoU) and weight space (L2).

    ``device``: where members are evaluated and fine-tuned (default: the generator's)."""
    check_zoo(zoo)
    data = zoo.data()
    dev = resolve_device(device if device is not None else getattr(generator, "device", "cpu"))
    ev = MemberEvaluator(zoo.model(), zoo.spec, probe=data.x_test, device=dev)
    orig = zoo.vectors()
    generated = generator.sample(n_samples, sampler="ddim", steps=steps, seed=seed)
    pick = torch.linspace(0, len(orig) - 1, min(len(orig), n_samples)).round().long()
    sets = {
        "generated": generated,
        "noise": noise_added(orig[pick], zoo.spec, noise_sigma, seed=seed),
        "gaussian": per_position_gaussian(orig, n_samples, seed=seed),
        "finetuned": finetuned_members(zoo, orig[pick], steps=finetune_steps, seed=seed, device=dev),
        "soup": soup(orig),
    }
    test = {k: ev(v, data.x_test, data.y_test) for k, v in sets.items()}
    orig_test = ev(orig, data.x_test, data.y_test)
    iou = iou_summary(orig_test, {k: v for k, v in test.items() if k != "soup"})
    frame = novelty_frame(orig, orig_test, {k: (sets[k], test[k]) for k in sets if k != "soup"})
    matched, thr = novelty_matched_accuracy(frame, threshold)
    l2_rows = {}
    for k in ("generated", "noise", "gaussian", "finetuned"):
        d, _ = nearest_neighbours(sets[k], orig)
        l2_rows[k] = median(d)
    d_oo, _ = nearest_neighbours(orig, orig, exclude_self=True)
    l2_rows["original"] = median(d_oo)
    cos_gen, _ = nearest_neighbours(generated, orig, metric="cosine")
    return MemorisationResult(sets=sets, test=test, original_test=orig_test, iou=iou, frame=frame, matched=matched,
                              threshold=thr, l2_nearest_median=l2_rows, cosine_generated_median=median(cos_gen),
                              soup_accuracy=float(test["soup"].accuracy[0]), evaluator=ev)


def _iou_sentence(gen: float, orig: float, tol: float = 0.005) -> str:
    if gen > orig + tol:
        return ("The generated models are closer to the zoo than its members are to one another: they behave like "
                "copies or interpolations of training checkpoints.")
    if gen < orig - tol:
        return "The generated models are more distinct from the zoo than its members are from one another."
    if orig > 1 - tol:
        return ("Both are at IoU ≈ 1: every member makes the same mistakes as its neighbour, so prediction-space IoU "
                "cannot tell a copy from a new model on this zoo.")
    return "The generated models are as close to the zoo as its members are to one another (neither copies nor new)."


def interpolation_accuracy(evaluator, data, v1: torch.Tensor, v2: torch.Tensor, lambdas: Sequence[float],
                           generator=None) -> dict[str, np.ndarray]:
    """Test accuracy along linear interpolation in weight space (and in latent space with a generator)."""
    out = {"weights": evaluator(interpolate_weights(v1, v2, lambdas), data.x_test, data.y_test).accuracy}
    if generator is not None:
        out["latent"] = evaluator(interpolate_latent(generator, v1, v2, lambdas), data.x_test, data.y_test).accuracy
    return out


def reading(result: MemorisationResult) -> str:
    """A computed, plain-language reading of a memorisation analysis."""
    iou = result.iou
    g, o = iou.loc["generated"], iou.loc["original"]
    m = result.matched
    lines = [
        f"Generated models' median max-IoU to the nearest original is {g['max_iou_to_original_median']:.3f}; "
        f"an original's median max-IoU to its nearest *other* original is {o['max_iou_to_original_median']:.3f}. "
        + _iou_sentence(g["max_iou_to_original_median"], o["max_iou_to_original_median"]),
        f"In weight space the median L2 distance to the nearest original is {result.l2_nearest_median['generated']:.4g} "
        f"for generated models vs {result.l2_nearest_median['original']:.4g} between originals.",
    ]
    thr = result.threshold
    gm = m.loc["generated", "novel_mean_accuracy"]
    others = {k: m.loc[k, "novel_mean_accuracy"] for k in m.index if k not in ("generated", "original")}
    others = {k: v for k, v in others.items() if not np.isnan(v)}
    if np.isnan(gm):
        lines.append(f"No generated model is more novel than the threshold (max IoU ≤ {thr:.3f}).")
    elif others:
        best = max(others, key=others.get)
        verdict = "beats" if gm > others[best] + 0.1 else ("matches" if abs(gm - others[best]) <= 0.1 else "trails")
        lines.append(f"At equal novelty (max IoU ≤ {thr:.3f}) generated models average {gm:.2f} %; the best baseline "
                     f"there is '{best}' at {others[best]:.2f} %: the generator {verdict} it.")
    return "\n".join(lines)
