"""The results table: generated models beside the originals and every baseline that needs no generator, and
its plain-language verdict."""


from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from workbench.core.device import DeviceLike, resolve_device
from workbench.data import TaskData
from workbench.evaluation.baselines import finetuned_members, noise_added, per_position_gaussian, soup
from workbench.evaluation.evaluate import EvalResult, MemberEvaluator
from workbench.zoo.protocol import ParameterZoo, check_zoo, condition_names


def zoo_evaluator(zoo: ParameterZoo) -> MemberEvaluator:
    """One evaluator for every condition of a classification zoo (the model is shared; inputs differ by condition)."""
    return MemberEvaluator(zoo.model(), zoo.spec, probe=zoo.data(condition_names(zoo)[0]).x_test[:4])


def chance(data: TaskData) -> float:
    """Majority-class accuracy (percent) on a test split."""
    return float(100.0 * torch.bincount(data.y_test).max() / len(data.y_test))


# ---------------------------------------------------------------------------------------------
# The evaluation harness: one table for generated models, the originals and the baselines
# ---------------------------------------------------------------------------------------------

def method_row(name: str, train: EvalResult, test: EvalResult, original_mean: float) -> dict:
    """Statistics of one set of models; the p-diff figure selects by *training* accuracy (never by test),
    ties broken by the lower training loss."""
    a = test.accuracy
    sel = int(np.lexsort((train.loss, -train.accuracy))[0])
    return {"method": name, "n": len(a), "best": float(a.max()), "mean": float(a.mean()),
            "median": float(np.median(a)), "min": float(a.min()), "std": float(a.std()),
            "within_1pt": float(np.mean(np.abs(a - original_mean) <= 1.0)),
            "selected_by_train_test_acc": float(a[sel])}



def evaluation_table(zoo: ParameterZoo, generated: dict[str, torch.Tensor], *, baselines: bool = True, seed: int = 0,
                     finetune_steps: int = 10, finetune_n: int | None = None, noise_sigmas=(0.01, 0.05, 0.1),
                     gaussian_n: int | None = None, evaluator: MemberEvaluator | None = None,
                     device: DeviceLike = None) -> tuple[pd.DataFrame, dict[str, tuple[EvalResult, EvalResult]]]:
    """Rows: original, each generated set, and (optionally) soup, noise σ, per-position Gaussian, fine-tuned.

    ``device``: where members are evaluated and fine-tuned (default: the evaluator's, else the CPU).
    Returns the table (accuracies in percent) and, per method, the (train, test) results for later analysis."""
    check_zoo(zoo)
    data = zoo.data()
    orig = zoo.vectors()
    dev = resolve_device(device) if device is not None else (evaluator.device if evaluator is not None
                                                             else resolve_device("cpu"))
    data = data.to(dev)  # moved once: every set below is evaluated on it
    ev = evaluator or MemberEvaluator(zoo.model(), zoo.spec, probe=data.x_test, device=dev)
    sets: dict[str, torch.Tensor] = {"original": orig, **{f"generated ({k})": v for k, v in generated.items()}}
    if baselines:
        n_gen = max((len(v) for v in generated.values()), default=len(orig))
        sets["soup"] = soup(orig)
        for s in noise_sigmas:
            sets[f"noise σ={s}"] = noise_added(orig, zoo.spec, s, seed=seed)
        sets["gaussian (per position)"] = per_position_gaussian(orig, gaussian_n or n_gen, seed=seed)
        k = finetune_n or min(len(orig), 50)
        pick = torch.linspace(0, len(orig) - 1, k).round().long()
        sets["fine-tuned"] = finetuned_members(zoo, orig[pick], steps=finetune_steps, seed=seed, device=dev)
    results = {name: (ev(v, data.x_train, data.y_train), ev(v, data.x_test, data.y_test)) for name, v in sets.items()}
    original_mean = float(results["original"][1].accuracy.mean())
    rows = [method_row(name, tr, te, original_mean) for name, (tr, te) in results.items()]
    return pd.DataFrame(rows).set_index("method"), results



def verdict(table: pd.DataFrame, generated: str, tolerance: float = 0.1) -> str:
    """A plain-language reading of an evaluation table, computed from its numbers."""
    g, o = table.loc[generated], table.loc["original"]
    lines = [f"{generated}: mean {g['mean']:.2f} % vs original mean {o['mean']:.2f} % ({g['mean'] - o['mean']:+.2f} pt); "
             f"selected by training accuracy: {g['selected_by_train_test_acc']:.2f} %; "
             f"{100 * g['within_1pt']:.0f} % of samples within 1 pt of the original mean."]
    baselines = [m for m in table.index if m != "original" and not m.startswith("generated")]
    matched = [m for m in baselines if table.loc[m, "mean"] >= g["mean"] - tolerance]
    if matched:
        best = max(matched, key=lambda m: table.loc[m, "mean"])
        lines.append(f"Baselines that need no generator reach the same level: {', '.join(matched)} "
                     f"(best: {best}, mean {table.loc[best, 'mean']:.2f} %). On this zoo the generator does not beat "
                     "them; its accuracy alone is no evidence that it learned more than the zoo's spread.")
    else:
        margin = g["mean"] - max(table.loc[m, "mean"] for m in baselines) if baselines else float("nan")
        lines.append(f"The generator's mean beats every baseline, by at least {margin:.2f} pt.")
    return "\n".join(lines)
