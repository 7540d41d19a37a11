"""Entire-model generation from independently trained seeds: the evaluation that shows the permutation collapse
and what alignment buys (generated with/without alignment, soups and Gaussians before/after, novelty, barriers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from workbench.core.device import DeviceLike
from workbench.evaluation.baselines import per_position_gaussian, soup
from workbench.evaluation.evaluate import EvalResult, MemberEvaluator
from workbench.evaluation.memorisation import interpolation_accuracy, max_iou_to, median
from workbench.evaluation.tables import evaluation_table, method_row
from workbench.generator.alignment import align_zoo
from workbench.zoo.protocol import ParameterZoo, check_zoo

__all__ = ["SeedsResult", "seeds_evaluation", "interpolation_barriers"]


@dataclass
class SeedsResult:
    """Tables of :func:`seeds_evaluation` (accuracies in percent, IoU in [0, 1])."""

    table: pd.DataFrame          # one row per method (original, generated, soups, Gaussians, noise, fine-tuned)
    novelty: pd.DataFrame        # per method: median / mean max-IoU to the nearest original
    barriers: pd.DataFrame       # per pair: accuracy barrier of linear interpolation before / after alignment
    curves: pd.DataFrame         # λ, pair, frame, accuracy: the interpolation curves behind the barriers
    aligned: torch.Tensor        # the zoo permuted onto the generator's reference member
    results: dict[str, tuple[EvalResult, EvalResult]]  # per method: (train, test) evaluations


def interpolation_barriers(evaluator: MemberEvaluator, data, vectors: torch.Tensor, spec, model,
                           pairs: list[tuple[int, int]], lambdas: Sequence[float] = tuple(np.linspace(0, 1, 11))
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy barrier, max over λ of [(1 − λ)·acc(θ_a) + λ·acc(θ_b) − acc((1 − λ)θ_a + λθ_b)], per pair, before
    and after permuting θ_b onto θ_a (weight matching, as Git Re-Basin measures it).

    Returns (barriers per pair and frame, the accuracy curves)."""
    rows, curve_rows = [], []
    for a, b in pairs:
        row = {"pair": f"{a}–{b}"}
        matched, _ = align_zoo(vectors[[a, b]], spec, model, reference=0)
        for frame, (va, vb) in (("unaligned", (vectors[a], vectors[b])), ("aligned", (matched[0], matched[1]))):
            acc = interpolation_accuracy(evaluator, data, va, vb, lambdas)["weights"]
            lam = np.asarray(lambdas, dtype=float)
            row[f"barrier_{frame}"] = float(np.max((1 - lam) * acc[0] + lam * acc[-1] - acc))
            row[f"midpoint_{frame}"] = float(acc[len(acc) // 2])
            curve_rows += [{"pair": row["pair"], "frame": frame, "lambda": float(x), "accuracy": float(y)}
                           for x, y in zip(lam, acc)]
        rows.append(row)
    return pd.DataFrame(rows).set_index("pair"), pd.DataFrame(curve_rows)


def seeds_evaluation(zoo: ParameterZoo, generated: Mapping[str, torch.Tensor], *, reference: int = 0, seed: int = 0,
                     n_pairs: int = 8, noise_sigmas=(0.1, 0.3, 0.5), evaluator: MemberEvaluator | None = None,
                     device: DeviceLike = "cpu") -> SeedsResult:
    """Evaluate generated entire models against the originals and the before/after-alignment baselines.

    ``generated`` maps a name (e.g. "aligned", "unaligned") to sampled vectors. Noise σ is relative to each
    tensor's std, as in :func:`workbench.evaluation.baselines.noise_added`."""
    check_zoo(zoo)
    data = zoo.data()
    orig = zoo.vectors()
    ev = evaluator or MemberEvaluator(zoo.model(), zoo.spec, probe=data.x_test, device=device)
    aligned, _ = align_zoo(orig, zoo.spec, zoo.model(), reference=reference)
    n_gen = max((len(v) for v in generated.values()), default=len(orig))
    table, results = evaluation_table(zoo, dict(generated), seed=seed, noise_sigmas=noise_sigmas, evaluator=ev)
    table = table.rename(index={"soup": "soup (unaligned)", "gaussian (per position)": "gaussian (unaligned)"})
    results["soup (unaligned)"] = results.pop("soup")
    results["gaussian (unaligned)"] = results.pop("gaussian (per position)")
    original_mean = float(table.loc["original", "mean"])
    for name, vecs in (("soup (aligned)", soup(aligned)),
                       ("gaussian (aligned)", per_position_gaussian(aligned, n_gen, seed=seed))):
        tr, te = ev(vecs, data.x_train, data.y_train), ev(vecs, data.x_test, data.y_test)
        results[name] = (tr, te)
        table.loc[name] = pd.Series(method_row(name, tr, te, original_mean)).drop("method")
    orig_test: EvalResult = results["original"][1]
    nov = []
    for name, (_, te) in results.items():
        m = max_iou_to(te, orig_test, exclude_self=(name == "original"))
        nov.append({"method": name, "max_iou_to_original_median": median(m),
                    "max_iou_to_original_mean": float(m.mean())})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(orig))  # disjoint pairs: no member (or pair) counted twice
    pairs = [(int(order[2 * i]), int(order[2 * i + 1])) for i in range(min(n_pairs, len(orig) // 2))]
    barriers, curves = interpolation_barriers(ev, data, orig, zoo.spec, zoo.model(), pairs)
    return SeedsResult(table, pd.DataFrame(nov).set_index("method"), barriers, curves, aligned, results)
