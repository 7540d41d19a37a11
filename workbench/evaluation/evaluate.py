"""Evaluation primitive: accuracy, loss and per-example predictions of many models at once.

Models given as parameter vectors (N, P) for a ``ParamSpec`` are evaluated without building N modules:
the network is cut where the first generated tensor lives, the frozen *prefix* runs once per dataset
(its output is cached), and the *suffix* runs for all members together with ``torch.func.vmap``. The cut
is only used after checking on real inputs that prefix ∘ suffix reproduces the model's output.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, vmap

from workbench.core.device import resolve_device
from workbench.core.params import ParamSpec, check_finite
from workbench.data import TaskData

__all__ = ["EvalResult", "MemberEvaluator", "evaluate", "sequential_blocks", "split_model"]


def _compact(t: torch.Tensor) -> torch.Tensor:
    """A copy of integer labels in int16 when they fit (else int64)."""
    small = t.numel() == 0 or (int(t.min()) >= -32768 and int(t.max()) <= 32767)
    return t.to(torch.int16) if small else t.clone()


@dataclass
class EvalResult:
    """Per-model accuracy (percent), mean cross-entropy, and predicted class of every example."""

    accuracy: np.ndarray
    loss: np.ndarray
    predictions: torch.Tensor  # (N, n_examples) int64
    targets: torch.Tensor      # (n_examples,)

    def __len__(self) -> int:
        return len(self.accuracy)

    def wrong(self) -> torch.Tensor:
        """(N, n_examples) bool: where each model is wrong."""
        return self.predictions != self.targets.unsqueeze(0)

    def to_frame(self) -> pd.DataFrame:
        """One row per model."""
        return pd.DataFrame({"accuracy": self.accuracy, "loss": self.loss})

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The result as named tensors (for safetensors): ``<prefix>.accuracy``, ``.loss``, ``.predictions``,
        ``.targets``; :meth:`from_tensors` reads them back exactly."""
        # copies: results often share one targets tensor, and safetensors refuses tensors that share memory
        return {f"{prefix}.accuracy": torch.tensor(np.asarray(self.accuracy)),
                f"{prefix}.loss": torch.tensor(np.asarray(self.loss)),
                # class indices fit int16 (a quarter of the disk of int64); read back as int64
                f"{prefix}.predictions": _compact(self.predictions), f"{prefix}.targets": _compact(self.targets)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> "EvalResult":
        """The result :meth:`to_tensors` wrote under ``prefix``."""
        return cls(tensors[f"{prefix}.accuracy"].numpy(), tensors[f"{prefix}.loss"].numpy(),
                   tensors[f"{prefix}.predictions"].long(), tensors[f"{prefix}.targets"].long())

    def summary(self) -> dict[str, float]:
        """best / mean / median / min / std of the accuracies."""
        a = self.accuracy
        return {"best": float(a.max()), "mean": float(a.mean()), "median": float(np.median(a)),
                "min": float(a.min()), "std": float(a.std())}


def sequential_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's children in order, with nested ``nn.Sequential`` containers expanded."""
    blocks: list[tuple[str, nn.Module]] = []

    def expand(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.Sequential):
                expand(full + ".", child)
            else:
                blocks.append((full, child))

    expand("", model)
    return blocks


def _seq(blocks: list[tuple[str, nn.Module]]) -> nn.Sequential:
    # Module names may not contain dots, so blocks are renamed b0, b1, ...
    return nn.Sequential(OrderedDict((f"b{i}", m) for i, (_, m) in enumerate(blocks)))


def split_model(model: nn.Module, names: Sequence[str], probe: torch.Tensor | None = None
                ) -> tuple[nn.Module, nn.Module, dict[str, str]]:
    """Cut ``model`` before the first block holding any of ``names``.

    Returns (prefix, suffix, name_map) where ``name_map`` maps original tensor names to suffix names.
    With a ``probe`` batch the cut is checked numerically; if the model is not a plain chain of its
    children (or the check fails), the prefix is the identity and the suffix the whole model.
    """
    model = model.eval()
    whole = (nn.Identity(), model, {n: n for n in model.state_dict()})
    blocks = sequential_blocks(model)
    if not blocks:
        return whole
    first = None
    for i, (bname, _) in enumerate(blocks):
        if any(n == bname or n.startswith(bname + ".") for n in names):
            first = i
            break
    if first is None:
        return whole
    prefix, suffix = _seq(blocks[:first]), _seq(blocks[first:])
    if probe is not None:
        with torch.no_grad():
            try:
                ok = torch.allclose(suffix(prefix(probe)), model(probe), rtol=1e-4, atol=1e-5)
            except Exception:
                ok = False
        if not ok:
            return whole
    name_map = {}
    for j, (bname, _) in enumerate(blocks[first:]):
        for n in model.state_dict():
            if n.startswith(bname + "."):
                name_map[n] = f"b{j}." + n[len(bname) + 1:]
    return prefix, suffix, name_map


class MemberEvaluator:
    """Evaluates parameter vectors of one ``spec`` on top of a base model; caches the frozen prefix."""

    def __init__(self, model: nn.Module, spec: ParamSpec, *, device: str | torch.device | None = None,
                 probe: torch.Tensor | None = None, memory_budget: float = 2e8) -> None:
        # no device given: where the probe data lives (CUDA data is evaluated on CUDA, not silently on the CPU)
        self.device = resolve_device(device if device is not None or probe is None else probe.device)
        self.model = copy.deepcopy(model).to(self.device).eval()
        self.spec = spec
        sd = self.model.state_dict()
        spec._check(sd, batched=False)
        if probe is not None:
            probe = probe[:4].to(self.device)
        self.prefix, self.suffix, self.name_map = split_model(self.model, spec.names, probe)
        self.memory_budget = memory_budget
        # input → prefix features, keyed by pointer, shape *and* a content fingerprint: a freed input's memory reused by
        # another tensor of the same shape (or an input changed in place) must not be served stale features
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cache_size = 16
        self._use_vmap = True
        self._per_example: int | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Prefix output for ``x`` (computed once per input tensor)."""
        flat = x.reshape(-1)
        fingerprint = (float(flat.sum(dtype=torch.float64)), float(flat[::97].sum(dtype=torch.float64)),
                       float(flat[-1]) if flat.numel() else 0.0)
        key = (x.data_ptr(), tuple(x.shape), x.dtype, fingerprint)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with torch.no_grad():
            feats = torch.cat([self.prefix(c.to(self.device)) for c in x.split(2048)])
        self._cache[key] = feats
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return feats

    def _activation_size(self, feats: torch.Tensor) -> int:
        """Largest per-example activation in the suffix (sets how many members run together)."""
        if self._per_example is None:
            sizes = [feats[0].numel()]
            hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(o[0].numel() if torch.is_tensor(o) else 0))
                     for m in self.suffix.modules()]
            with torch.no_grad():
                self.suffix(feats[:1])
            for h in hooks:
                h.remove()
            self._per_example = max(sizes)
        return self._per_example

    def logits(self, vectors: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """(m, n, C) logits of a chunk of member vectors on prefix features."""
        params = self.spec.unflatten(vectors.to(self.device))
        # parameters follow the input's float dtype; integer inputs (token ids) leave them as they are
        dtype = feats.dtype if feats.is_floating_point() else None
        batched = {self.name_map[n]: t.to(dtype) if dtype else t for n, t in params.items()}
        if self._use_vmap:
            try:
                def f(p: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
                    return functional_call(self.suffix, (p,), (xb,))

                with torch.no_grad():
                    return vmap(f, in_dims=(0, None))(batched, feats)
            except Exception:
                self._use_vmap = False  # an op without a batching rule: fall back to one member at a time

        with torch.no_grad():
            return torch.stack([functional_call(self.suffix, ({k: v[i] for k, v in batched.items()},), (feats,))
                                for i in range(vectors.shape[0])])

    def __call__(self, vectors: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> EvalResult:
        """Evaluate (N, P) vectors on (x, y)."""
        if vectors.ndim == 1:
            vectors = vectors.unsqueeze(0)
        if vectors.shape[-1] != self.spec.numel:
            raise ValueError(f"vectors have length {vectors.shape[-1]}, the spec expects {self.spec.numel}")
        check_finite(vectors, "the parameter vectors to evaluate")
        feats = self.features(x)
        y = y.to(self.device)
        n = feats.shape[0]
        ex_chunk = min(n, 4096)
        per = self._activation_size(feats) * ex_chunk
        m_chunk = int(max(1, min(256, self.memory_budget // max(per, 1))))
        accs, losses, preds = [], [], []
        for v in vectors.split(m_chunk):
            correct = torch.zeros(v.shape[0], device=self.device, dtype=torch.int64)
            loss = torch.zeros(v.shape[0], device=self.device, dtype=torch.float64)
            pred_parts = []
            for s in range(0, n, ex_chunk):
                lg = self.logits(v, feats[s:s + ex_chunk])
                yy = y[s:s + ex_chunk]
                p = lg.argmax(-1)
                pred_parts.append(p)
                correct += (p == yy).sum(1)
                loss += F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), yy.repeat(v.shape[0]),
                                        reduction="none").view(v.shape[0], -1).sum(1).double()
            accs.append(100.0 * correct.double() / n)
            losses.append(loss / n)
            preds.append(torch.cat(pred_parts, 1))
        return EvalResult(torch.cat(accs).cpu().numpy().astype(np.float64), torch.cat(losses).cpu().numpy(),
                          torch.cat(preds).cpu(), y.cpu())


def _split_tensors(data: TaskData | tuple[torch.Tensor, torch.Tensor], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, TaskData):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    x, y = data
    return x, y


def evaluate(
    models_or_vectors: torch.Tensor | nn.Module | Sequence[nn.Module],
    data: TaskData | tuple[torch.Tensor, torch.Tensor],
    *,
    split: str = "test",
    model: nn.Module | None = None,
    spec: ParamSpec | None = None,
    evaluator: MemberEvaluator | None = None,
    device: str | torch.device | None = None,
) -> EvalResult:
    """Accuracy (percent), loss and predictions of modules, or of (N, P) vectors loaded into ``model`` by ``spec``
    (on ``device``; by default where the data lives)."""
    x, y = _split_tensors(data, split)
    if device is None:  # where the data lives: CUDA data is evaluated on CUDA, not silently on the CPU
        device = x.device
    if isinstance(models_or_vectors, torch.Tensor):
        if evaluator is None:
            if model is None or spec is None:
                raise ValueError("evaluating vectors needs the base model and the ParamSpec (model=..., spec=...)")
            evaluator = MemberEvaluator(model, spec, device=device, probe=x)
        return evaluator(models_or_vectors, x, y)
    modules = [models_or_vectors] if isinstance(models_or_vectors, nn.Module) else list(models_or_vectors)
    dev = resolve_device(device)
    accs, losses, preds = [], [], []
    yd = y.to(dev)
    for m in modules:
        m = m.to(dev).eval()
        with torch.no_grad():
            lg = torch.cat([m(c.to(dev)) for c in x.split(2048)])
        p = lg.argmax(-1)
        accs.append(100.0 * int((p == yd).sum()) / len(yd))
        losses.append(float(F.cross_entropy(lg.float(), yd)))
        preds.append(p.cpu())
    return EvalResult(np.array(accs), np.array(losses), torch.stack(preds), y.cpu())
