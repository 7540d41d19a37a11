"""Evaluating RPG's generated models: per task code against the model trained on it, the nearest seen code's model,
the soup of the seen models and a regressor from code to weights with no diffusion; entire models from seeds in
the aligned frame (is a sample a new model or a perturbed replay of a zoo member?)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from workbench.evaluation.evaluate import MemberEvaluator
from workbench.evaluation.memorisation import nearest_neighbours
from workbench.generator.alignment import align_vectors
from workbench.systems.rpg.task_zoo import TaskCodeZoo, code_labels, hamming

__all__ = ["RidgeCodeRegressor", "code_accuracy", "task_code_table", "summarise_task_codes", "aligned_novelty"]


@dataclass
class RidgeCodeRegressor:
    """Weights as an affine function of the code, ridge-regularised, α chosen by leave-one-out error on the seen
    codes: the no-diffusion baseline (if a linear map already solves unseen codes, the generator adds nothing)."""

    coef: torch.Tensor      # (C + 1, P): codes with a constant column
    alpha: float
    loo_error: dict[float, float]

    @classmethod
    def fit(cls, codes: torch.Tensor, vectors: torch.Tensor,
            alphas: tuple[float, ...] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)) -> "RidgeCodeRegressor":
        """Fit on seen (codes, vectors); α by the closed-form leave-one-out residuals of ridge."""
        X = torch.cat([codes.double(), torch.ones(len(codes), 1, dtype=torch.float64)], 1)
        V = vectors.double()
        errors = {}
        best = None
        for a in alphas:
            reg = a * torch.eye(X.shape[1], dtype=torch.float64)
            reg[-1, -1] = 0.0  # the intercept is not shrunk
            inv = torch.linalg.inv(X.T @ X + reg)
            H = X @ inv @ X.T
            resid = (V - H @ V) / (1 - torch.diagonal(H)).clamp_min(1e-9)[:, None]
            errors[a] = float(resid.pow(2).mean())
            if best is None or errors[a] < errors[best]:
                best = a
        reg = best * torch.eye(X.shape[1], dtype=torch.float64)
        reg[-1, -1] = 0.0
        coef = torch.linalg.solve(X.T @ X + reg, X.T @ V)
        return cls(coef.float(), float(best), errors)

    def predict(self, codes: torch.Tensor) -> torch.Tensor:
        """(n, P) weights for (n, C) codes."""
        X = torch.cat([codes.float(), torch.ones(len(codes), 1)], 1)
        return X @ self.coef


def code_accuracy(evaluator: MemberEvaluator, zoo: TaskCodeZoo, vectors: torch.Tensor, code: torch.Tensor,
                  split: str = "test") -> np.ndarray:
    """Accuracy (percent) of each of (m, P) vectors on the binary task of ``code``."""
    d = zoo.digits()
    x, y = (d.x_test, d.y_test) if split == "test" else (d.x_train, d.y_train)
    return evaluator(vectors, x, code_labels(code.reshape(1, -1), y)[0]).accuracy


def task_code_table(zoo: TaskCodeZoo, generated: Mapping[str, torch.Tensor], ids: list[int], *,
                    regressor: RidgeCodeRegressor, evaluator: MemberEvaluator | None = None) -> pd.DataFrame:
    """One row per code (member ``ids`` of the zoo): the generated models (mean, best, selected by training
    accuracy), the model trained on the code, the nearest seen code's model, the soup of the seen models, the
    regressor's model, and the majority-class rate — all on the code's own test split (percent)."""
    ev = evaluator or MemberEvaluator(zoo.model(), zoo.spec, probe=zoo.digits().x_test)
    seen = zoo.seen_ids()
    seen_codes, seen_vecs = zoo.codes[seen], zoo.vectors()[seen]
    soup = seen_vecs.mean(0, keepdim=True)
    rows = []
    for i in ids:
        name, code = zoo.names[i], zoo.codes[i]
        gen = generated[name]
        test = code_accuracy(ev, zoo, gen, code)
        train = code_accuracy(ev, zoo, gen, code, split="train")
        dist = hamming(code[None], seen_codes)[0].clone()
        if i in seen:
            dist[seen.index(i)] = 10 ** 6  # a seen code's nearest *other* code
        near = int(dist.argmin())
        y = code_labels(code[None], zoo.digits().y_test)[0].float()
        rows.append({
            "code": name, "seen": i < zoo.n_seen, "n_positive": int(code.sum()),
            "majority": 100 * float(max(y.mean(), 1 - y.mean())),
            "trained": float(zoo.accuracies(name)[0]),
            "generated_mean": float(test.mean()), "generated_best": float(test.max()),
            "generated_selected": float(test[int(np.argmax(train))]),
            "nearest_code": float(code_accuracy(ev, zoo, seen_vecs[near:near + 1], code)[0]),
            "nearest_code_hamming": int(dist[near]),
            "soup": float(code_accuracy(ev, zoo, soup, code)[0]),
            "regressor": float(code_accuracy(ev, zoo, regressor.predict(code[None]), code)[0]),
        })
    return pd.DataFrame(rows).set_index("code")


def summarise_task_codes(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over codes of every method, seen and held-out codes apart, with the generated/trained ratio."""
    cols = ["trained", "generated_mean", "generated_selected", "generated_best", "nearest_code", "soup",
            "regressor", "majority"]
    out = table.groupby("seen")[cols].mean().rename(index={True: "seen codes", False: "unseen codes"})
    out["generated_over_trained"] = out["generated_mean"] / out["trained"]
    out["n_codes"] = table.groupby("seen").size().rename(index={True: "seen codes", False: "unseen codes"})
    return out


def aligned_novelty(originals: torch.Tensor, generated: Mapping[str, torch.Tensor], spec, model, *,
                    aligned_originals: torch.Tensor, reference: int = 0, seed: int = 0) -> pd.DataFrame:
    """Per method: L2 from each model to its nearest original *after aligning both to the reference member*
    (weight matching), beside the aligned originals' distance to their nearest other original. A generator whose
    samples sit much closer to an original than the originals sit to one another replays the zoo."""
    rows = []
    d_orig, _ = nearest_neighbours(aligned_originals, aligned_originals, exclude_self=True)
    rows.append({"method": "original", "n": len(originals), "l2_to_nearest_aligned_median": float(d_orig.median()),
                 "l2_to_nearest_aligned_mean": float(d_orig.mean())})
    ref = originals[reference:reference + 1]
    for name, vecs in generated.items():
        aligned, _ = align_vectors(torch.cat([ref, vecs]), spec, model, reference=0, seed=seed)
        d, _ = nearest_neighbours(aligned[1:], aligned_originals)
        rows.append({"method": name, "n": len(vecs), "l2_to_nearest_aligned_median": float(d.median()),
                     "l2_to_nearest_aligned_mean": float(d.mean())})
    out = pd.DataFrame(rows).set_index("method")
    out["ratio_to_originals"] = out["l2_to_nearest_aligned_median"] / float(d_orig.median())
    return out
