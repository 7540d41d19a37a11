"""An experiment's samples, tables and per-model evaluations saved once in its run directory and loaded on every
later run with the same key (the zoo's and generator's bytes and the settings): a report's second run re-executes
the notebooks without re-sampling or re-evaluating. The tensors go to ``results.safetensors``; ``results.json``,
written last, holds the key, the tables and a fingerprint of the tensors, so an interrupted or damaged save is
recomputed, never half-loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from workbench.core.io import CorruptFileError, atomic_write_json, load_tensors, read_json, save_tensors
from workbench.core.result_cache import data_fingerprint, frame_from_json, frame_to_json
from workbench.evaluation.evaluate import EvalResult

__all__ = ["StoredResults", "save_results", "load_results"]


@dataclass
class StoredResults:
    """What an experiment keeps: named tables (or None), named tensors, per-method (train, test) evaluations,
    single evaluations, and any JSON values (e.g. the measured seconds)."""

    frames: dict[str, pd.DataFrame | None]
    tensors: dict[str, torch.Tensor]
    results: dict[str, tuple[EvalResult, ...]]
    single: dict[str, EvalResult]
    extra: dict[str, Any]


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    return data_fingerprint(*(tensors[k] for k in sorted(tensors)))


def save_results(folder: str | Path, key: dict[str, Any], stored: StoredResults) -> None:
    """Write ``stored`` under ``folder`` for ``key`` (the JSON last)."""
    folder = Path(folder)
    tensors = {f"tensor.{k}": v.contiguous().clone() for k, v in stored.tensors.items()}
    for name, r in stored.single.items():
        tensors.update(r.to_tensors(f"single.{name}"))
    methods = list(stored.results)
    for i, m in enumerate(methods):
        for j, r in enumerate(stored.results[m]):
            tensors.update(r.to_tensors(f"method{i}.{j}"))
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / "results.safetensors", tensors)
    atomic_write_json(folder / "results.json", {
        "key": key, "tensor_names": list(stored.tensors), "single": list(stored.single), "methods": methods,
        "splits": [len(stored.results[m]) for m in methods], "extra": stored.extra,
        "frames": {k: frame_to_json(f) if f is not None else None for k, f in stored.frames.items()},
        "digest": _tensor_digest(tensors)})


def load_results(folder: str | Path, key: dict[str, Any]) -> StoredResults | None:
    """What :func:`save_results` wrote for ``key``, or None (nothing saved, another key, or a damaged file)."""
    folder = Path(folder)
    try:
        saved = read_json(folder / "results.json")
        if saved.get("key") != json.loads(json.dumps(key, sort_keys=True, default=str)):
            return None
        tensors = load_tensors(folder / "results.safetensors")
        if _tensor_digest(tensors) != saved["digest"]:
            return None
        return StoredResults(
            frames={k: frame_from_json(f) if f is not None else None for k, f in saved["frames"].items()},
            tensors={k: tensors[f"tensor.{k}"] for k in saved["tensor_names"]},
            results={m: tuple(EvalResult.from_tensors(tensors, f"method{i}.{j}") for j in range(n))
                     for i, (m, n) in enumerate(zip(saved["methods"], saved["splits"]))},
            single={k: EvalResult.from_tensors(tensors, f"single.{k}") for k in saved["single"]},
            extra=saved["extra"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, CorruptFileError):
        return None
