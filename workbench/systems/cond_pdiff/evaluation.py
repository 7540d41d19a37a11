"""Evaluation of task-conditioned generation: per seen task (original, soup, generated, selected by training
accuracy, condition swap) and per unseen task (generated vs chance, the all-tasks soup and the nearest seen task's
soup), plus the ablations of Cond P-Diff (normalisation, condition kind, checkpoints per task)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from workbench.core.params import ParamSpec
from workbench.core.result_cache import (
    cached_json,
    data_fingerprint,
    key_digest,
)
from workbench.data import TaskData
from workbench.evaluation.baselines import soup
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.evaluation.memorisation import nearest_neighbours
from workbench.evaluation.result_store import StoredResults, load_results, save_results
from workbench.evaluation.tables import chance, method_row, zoo_evaluator
from workbench.systems.cond_pdiff.generator import CondPDiff, CondPDiffConfig, fit_or_load_cond
from workbench.zoo.protocol import Condition, ParameterZoo, condition_names

__all__ = ["CondResult", "cond_evaluation", "cond_ablation", "summary", "distance_accuracy_frame",
           "parameter_embedding_groups", "zoo_evaluator", "chance"]


@dataclass
class CondResult:
    """Tables of :func:`cond_evaluation` (accuracies in percent)."""

    seen: pd.DataFrame      # one row per seen task
    unseen: pd.DataFrame    # one row per unseen task
    samples: dict[str, torch.Tensor]  # task → generated vectors


def _acc(ev: MemberEvaluator, vecs: torch.Tensor, data, split: str = "test") -> np.ndarray:
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    return ev(vecs, x, y).accuracy


def cond_evaluation(zoo: ParameterZoo, gen: CondPDiff, *, n_samples: int = 20, seed: int = 0, sampler: str = "ddim",
                    steps: int | None = None, guidance_scale: float | None = None,
                    evaluator: MemberEvaluator | None = None, max_train: int = 1000,
                    swap_originals: int = 10) -> CondResult:
    """Evaluate ``gen`` (a fitted :class:`CondPDiff`) on every task of ``zoo``: its seen tasks, and (text
    conditions) the zoo's unseen conditions.

    The swap check evaluates the weights generated for task i on the next seen task's test split (cyclic), where
    they should do badly if the condition is used; the originals' swap uses their last ``swap_originals``
    checkpoints. Selection by training accuracy uses the first ``max_train`` training examples (the splits are
    shuffled), which keeps the evaluation linear in the number of samples rather than in the training set."""
    ev = evaluator or zoo_evaluator(zoo)
    table: dict[str, Condition] = {c.name: c for c in zoo.conditions}
    seen = list(gen.seen)
    samples: dict[str, torch.Tensor] = {}
    rows = []
    for i, name in enumerate(seen):
        task, data = table[name], zoo.data(name)
        v = gen.sample(task, n_samples, seed=seed + i, sampler=sampler, steps=steps, guidance_scale=guidance_scale)
        samples[name] = v
        orig = zoo.accuracies(name)
        tr = ev(v, data.x_train[:max_train], data.y_train[:max_train])
        te = ev(v, data.x_test, data.y_test)
        gen_row = method_row("generated", tr, te, float(orig.mean()))
        other = seen[(i + 1) % len(seen)]
        swap = _acc(ev, v, zoo.data(other)) if other != name else np.full(len(v), np.nan)
        rows.append({"task": name, "original_best": float(orig.max()), "original_mean": float(orig.mean()),
                     "soup": float(_acc(ev, soup(zoo.vectors([name])), data)[0]),
                     "generated_best": gen_row["best"], "generated_mean": gen_row["mean"],
                     "generated_median": gen_row["median"],
                     "selected_by_train": gen_row["selected_by_train_test_acc"],
                     "swap_task": other, "swap_generated_mean": float(np.mean(swap)),
                     "swap_original_mean": float(np.mean(_acc(ev, zoo.vectors([name])[-swap_originals:],
                                                                               zoo.data(other)))),
                     "chance": chance(data)})
    unseen_rows = []
    all_soup = soup(zoo.vectors(seen))
    if gen.config.uses_text:
        for i, name in enumerate(n for n, c in table.items() if not c.seen):
            task, data = table[name], zoo.data(name)
            v = gen.sample(task, n_samples, seed=seed + 100 + i, sampler=sampler, steps=steps,
                           guidance_scale=guidance_scale)
            samples[name] = v
            near = gen.nearest_seen(gen.condition([task]))[0]
            tr = ev(v, data.x_train[:max_train], data.y_train[:max_train])
            te = ev(v, data.x_test, data.y_test)
            orig = zoo.accuracies(name)
            row = method_row("generated", tr, te, float(orig.mean()))
            unseen_rows.append({
                "task": name, "nearest_seen": near, "original_mean": float(orig.mean()),
                "generated_mean": row["mean"], "generated_best": row["best"],
                "selected_by_train": row["selected_by_train_test_acc"], "chance": chance(data),
                "all_seen_soup": float(_acc(ev, all_soup, data)[0]),
                "nearest_seen_soup": float(_acc(ev, soup(zoo.vectors([near])), data)[0])})
    return CondResult(pd.DataFrame(rows).set_index("task"),
                      pd.DataFrame(unseen_rows).set_index("task") if unseen_rows else pd.DataFrame(), samples)


def cached_cond_evaluation(directory: str | Path, zoo: ParameterZoo, gen: CondPDiff, *, n_samples: int = 20,
                           seed: int = 0, **kw) -> CondResult:
    """:func:`cond_evaluation`, computed once per directory for this zoo, generator config and settings (the
    experiments' result store: tables and generated vectors), and loaded by a later call with the same inputs (the
    notebook's rerun); a damaged store is computed again."""
    key = {"zoo": data_fingerprint(zoo.vectors()), "config": gen.config.to_dict(), "n_samples": n_samples,
           "seed": seed, **{k: v for k, v in kw.items() if k != "evaluator"}}
    saved = load_results(directory, key)
    if saved is not None:
        unseen = saved.frames["unseen"]
        return CondResult(saved.frames["seen"], unseen if len(unseen) else pd.DataFrame(),
                          {k: saved.tensors[k] for k in saved.extra["sample_order"]})
    res = cond_evaluation(zoo, gen, n_samples=n_samples, seed=seed, **kw)
    save_results(directory, key, StoredResults(frames={"seen": res.seen, "unseen": res.unseen}, tensors=res.samples,
                                               results={}, single={}, extra={"sample_order": list(res.samples)}))
    return res


def summary(res: CondResult) -> dict[str, float]:
    """Task-averaged figures (the ``bench cond`` keys)."""
    s, u = res.seen, res.unseen
    out = {"n_tasks_seen": len(s), "n_tasks_unseen": len(u),
           "seen_original_mean": float(s["original_mean"].mean()), "seen_soup_mean": float(s["soup"].mean()),
           "seen_generated_mean": float(s["generated_mean"].mean()),
           "seen_selected_by_train_mean": float(s["selected_by_train"].mean()),
           "swap_generated_mean": float(s["swap_generated_mean"].mean())}
    if len(u):
        out.update({"unseen_generated_mean": float(u["generated_mean"].mean()),
                    "unseen_chance_mean": float(u["chance"].mean()),
                    "unseen_seen_soup_mean": float(u["all_seen_soup"].mean()),
                    "unseen_nearest_soup_mean": float(u["nearest_seen_soup"].mean()),
                    "unseen_original_mean": float(u["original_mean"].mean())})
    return out


def cond_ablation(zoo: ParameterZoo, config: CondPDiffConfig, variants: dict[str, dict], *, n_samples: int = 10, seed: int = 0,
                  steps: int | None = None, checkpoints: int | None = None, cache_dir: str | Path | None = None,
                  progress: bool = False, directory: str | Path | None = None) -> pd.DataFrame:
    """Refit the conditional generator for each variant (fields of ``CondPDiffConfig``; ``pdiff`` fields under
    ``"pdiff"``; ``"checkpoints"``: use only the last k checkpoints per task) and tabulate task-averaged figures.

    Variants that come to the same configuration (e.g. the default normalisation, the default condition and "all
    checkpoints") are fitted and evaluated once. With ``directory``, each distinct fit is saved in its own folder
    (named by a digest of its configuration) with its summary, so a later call loads both and an interrupted one
    resumes."""
    rows, done = [], {}
    for name, change in variants.items():
        change = dict(change)
        k = change.pop("checkpoints", checkpoints)
        pd_change = change.pop("pdiff", {})
        base = config.pdiff
        if steps is not None:
            base = replace(base, diffusion_train=replace(base.diffusion_train, steps=steps))
        cfg = replace(config, pdiff=replace(base, **pd_change), **change)
        view = _LastK(zoo, k) if k else zoo
        if k and len(view.vectors()) == len(zoo.vectors()):
            k = None  # "the last k" of zoos that hold no more than k per task: the whole zoo, fitted once
        key = {"config": cfg.to_dict(), "checkpoints": k}
        tag = key_digest(key)
        if tag not in done:
            def evaluated(cfg=cfg, view=view, tag=tag) -> dict:
                if directory is None:
                    gen = CondPDiff(cfg, cache_dir=cache_dir).fit(view, progress=progress)
                else:
                    gen = fit_or_load_cond(view, cfg, Path(directory) / tag, cache_dir=cache_dir, progress=progress)
                res = cond_evaluation(view, gen, n_samples=n_samples, seed=seed)
                return {**{k2: float(v) for k2, v in summary(res).items() if not k2.startswith("n_")},
                        "fit_seconds": float(gen.seconds.get("total", float("nan")))}

            done[tag] = evaluated() if directory is None else cached_json(
                Path(directory) / tag / "summary.json",
                {**key, "n_samples": n_samples, "seed": seed, "zoo": data_fingerprint(view.vectors())}, evaluated)
        rows.append({"variant": name, **done[tag]})
    return pd.DataFrame(rows).set_index("variant")


class _LastK:
    """A view of a zoo keeping only the last ``k`` members of every condition (the ablation on the number of
    checkpoints per task); the rest of the zoo interface is the zoo's own."""

    def __init__(self, zoo: ParameterZoo, k: int) -> None:
        self._zoo, self.k = zoo, int(k)

    @property
    def spec(self) -> ParamSpec:
        """The zoo's generated tensors."""
        return self._zoo.spec

    @property
    def conditions(self) -> list[Condition]:
        """The zoo's conditions."""
        return self._zoo.conditions

    def model(self) -> torch.nn.Module:
        """The zoo's network."""
        return self._zoo.model()

    def vectors(self, condition: str | Sequence[str] | None = None) -> torch.Tensor:
        """The last ``k`` member vectors of each condition, condition after condition."""
        return torch.cat([self._zoo.vectors([t])[-self.k:] for t in condition_names(self._zoo, condition)])

    def data(self, condition: str | None = None) -> TaskData:
        """The zoo's data of the condition."""
        return self._zoo.data(condition)

    def accuracies(self, condition: str | Sequence[str] | None = None, split: str = "test") -> np.ndarray:
        """Stored accuracies of the last ``k`` members of each condition, in :meth:`vectors` order."""
        return np.concatenate([self._zoo.accuracies(t, split)[-self.k:] for t in condition_names(self._zoo, condition)])


def distance_accuracy_frame(zoo: ParameterZoo, res: CondResult, evaluator: MemberEvaluator | None = None
                            ) -> pd.DataFrame:
    """Per generated model of a seen task: exact float64 L2 distance to the nearest original checkpoint of that
    task, and its test accuracy (Cond P-Diff Fig. 3f)."""

    ev = evaluator or zoo_evaluator(zoo)
    rows = []
    for task in res.seen.index:
        gen, orig = res.samples[task], zoo.vectors([task])
        dist, _ = nearest_neighbours(gen, orig)
        acc = ev(gen, zoo.data(task).x_test, zoo.data(task).y_test).accuracy
        rows += [{"task": task, "l2_to_nearest_original": float(d), "accuracy": float(a)}
                 for d, a in zip(dist, acc)]
    return pd.DataFrame(rows)


def parameter_embedding_groups(zoo: ParameterZoo, res: CondResult, per_task: int | None = None) -> dict[str, torch.Tensor]:
    """Original and generated vectors per seen task, keyed "original · task" / "generated · task", for t-SNE."""
    groups = {}
    for task in res.seen.index:
        o = zoo.vectors([task])
        groups[f"original · {task}"] = o[-per_task:] if per_task else o
        groups[f"generated · {task}"] = res.samples[task]
    return groups
