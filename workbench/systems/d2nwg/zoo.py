"""D2NWG's dataset zoo: per dataset of the meta-dataset, a classifier head on frozen EfficientNet-Lite0 features
(the CH setting) whose last training steps are kept as dense checkpoints, and a LoRA variant (LoRA on ``conv_head``
plus the head) through the shared LoRA engine. The dataset is each member's condition; its recipe rebuilds it.

Layout of a zoo folder::

    config.json               DatasetZooConfig
    datasets.json             every recipe (seen, then held out), in condition order
    features/<source>.<domain>.safetensors   prefix features + labels of a (source, domain) image pool, both splits
    heads/                    the CH zoo (the engine's layout: spec.json, datasets/*.safetensors, manifest.csv)
    lora/                     the LoRA variant (same layout)
    checksums.json            sha256 of every feature file

Everything is written atomically and checksummed; an interrupted collection redoes only the missing files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from workbench.core.config import JSONConfig
from workbench.core.device import DeviceLike, resolve_device
from workbench.core.io import (
    atomic_write_json,
    load_tensors,
    read_json,
    record_checksum,
    save_tensors,
    verify_checksum,
)
from workbench.core.params import ParamSpec
from workbench.core.progress import tqdm
from workbench.data import DatasetInfo, TaskData, seeded_split
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.systems.d2nwg.domains import DOMAINS, apply_domain
from workbench.systems.d2nwg.features import BackboneSettings, ImageFeaturizer
from workbench.systems.d2nwg.heads import head_accuracy
from workbench.systems.d2nwg.meta_dataset import UNSEEN_KINDS, DatasetRecipe, domain_seed, plan_datasets
from workbench.systems.d2nwg.sources import SOURCES, load_source
from workbench.zoo.executors import Executor, make_executor
from workbench.zoo.lora.engine import (
    LossFn,
    collect_conditions,
    head_name,
    minibatch_cross_entropy,
    read_condition,
    read_timings,
    reset_lora,
    start_zoo,
)
from workbench.zoo.protocol import Condition, condition_names

__all__ = ["DatasetZooConfig", "DatasetZoo", "collect_dataset_zoo", "SupportSet", "VARIANTS"]

VARIANTS = ("head", "lora")


@dataclass(frozen=True)
class DatasetZooConfig(JSONConfig, name="D2NWG dataset zoo config"):
    """The meta-dataset (sources × domains × class subsets, and the held-out kinds), the backbone, and the training
    schedules of the heads and of the LoRA variant."""

    name: str = "d2nwg_datasets"
    sources: tuple[str, ...] = ("mnist5k", "digits")
    seen_domains: tuple[str, ...] = ("identity", "rotation", "inversion", "tint", "blur", "noise", "scale")
    unseen_domains: tuple[str, ...] = ("elastic",)
    unseen_sources: tuple[str, ...] = ("printed",)
    ways: int = 5
    n_combinations: int = 5            # seen class subsets per seen source (× every seen domain)
    n_unseen_combinations: int = 2     # held-out subsets per seen source, each in one seen domain
    n_unseen_domain: int = 2           # seen subsets per seen source in the unseen domains
    n_unseen_source: int = 4           # subsets per unseen source
    n_per_class: int = 150             # images per class of each source pool
    test_fraction: float = 0.3
    data_seed: int = 0
    image_size: int = 64
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    steps: int = 150                   # head training (Adam, minibatches of the training split)
    keep_last: int = 10                # the last steps kept as the dataset's dense checkpoints
    batch_size: int = 64
    lr: float = 1e-2
    lora: bool = True
    target_modules: tuple[str, ...] = ("conv_head",)
    rank: int = 4
    alpha: float = 8.0
    lora_steps: int = 100
    lora_keep_last: int = 10
    lora_lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for f in ("sources", "seen_domains", "unseen_domains", "unseen_sources", "target_modules"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        unknown_src = [s for s in (*self.sources, *self.unseen_sources) if s not in SOURCES]
        if unknown_src:
            raise ValueError(f"unknown sources {unknown_src}: use some of {sorted(SOURCES)}")
        unknown_dom = [d for d in (*self.seen_domains, *self.unseen_domains) if d not in DOMAINS]
        if unknown_dom:
            raise ValueError(f"unknown domains {unknown_dom}: use some of {list(DOMAINS)}")
        for name in ("steps", "keep_last", "lora_steps", "lora_keep_last", "n_per_class", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.keep_last > self.steps or self.lora_keep_last > self.lora_steps:
            raise ValueError("keep_last must be <= steps and lora_keep_last <= lora_steps")
        self.recipes()  # the plan must be drawable: counts vs classes

    @property
    def n_outputs(self) -> int:
        """Logits of every head (the backbone protocol's name for ``ways``)."""
        return self.ways

    def recipes(self) -> list[DatasetRecipe]:
        """Every dataset, seen first (deterministic in ``data_seed``)."""
        return plan_datasets(sources=self.sources, seen_domains=self.seen_domains,
                             unseen_domains=self.unseen_domains, unseen_sources=self.unseen_sources, ways=self.ways,
                             n_combinations=self.n_combinations, n_unseen_combinations=self.n_unseen_combinations,
                             n_unseen_domain=self.n_unseen_domain, n_unseen_source=self.n_unseen_source,
                             seed=self.data_seed)

    def backbone_settings(self) -> BackboneSettings:
        """The frozen backbone and adapter."""
        return BackboneSettings(backbone=self.backbone, pretrained=self.pretrained, image_size=self.image_size,
                                n_outputs=self.ways, target_modules=self.target_modules, rank=self.rank,
                                alpha=self.alpha, seed=self.seed)


@dataclass(frozen=True)
class SupportSet:
    """A few labelled examples of one dataset: ``features`` (N, F) pooled backbone features, ``labels`` (N,) in
    0..ways-1. Build one with :meth:`DatasetZoo.support`, or from your images with :meth:`from_images`."""

    features: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise ValueError(f"support features are (N, features), got shape {tuple(self.features.shape)}")
        if self.labels.ndim != 1 or len(self.labels) != len(self.features):
            raise ValueError(f"support labels must be (N,) = ({len(self.features)},), got {tuple(self.labels.shape)}")
        if not torch.isfinite(self.features).all():
            raise ValueError("the support features contain NaN or Inf values")
        object.__setattr__(self, "labels", self.labels.long())

    @property
    def ways(self) -> int:
        """Number of classes (labels are 0..ways-1)."""
        return int(self.labels.max()) + 1

    @property
    def shots(self) -> int:
        """Examples of the rarest class."""
        return int(torch.bincount(self.labels).min())

    @classmethod
    def from_images(cls, images: torch.Tensor, labels: torch.Tensor, featurizer: ImageFeaturizer) -> "SupportSet":
        """A support set of raw images (N, C, H, W) in [0, 1] with labels, through the zoo's frozen backbone."""
        return cls(featurizer(images), torch.as_tensor(labels), images)


def _pair_key(source: str, domain: str) -> str:
    return f"{source}.{domain}"


def _pair_images(cfg: DatasetZooConfig, source: str, domain: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray,
                                                                          np.ndarray]:
    """(images under the domain, labels, train index, test index) of a (source, domain) pool."""
    src = load_source(source, n_per_class=cfg.n_per_class, seed=cfg.data_seed)
    tr, te = seeded_split(len(src.y), cfg.test_fraction, cfg.data_seed)
    return apply_domain(src.x, domain, seed=domain_seed(cfg.data_seed, source, domain)), src.y, tr, te


def _collect_features(cfg: DatasetZooConfig, root: Path, featurizer: ImageFeaturizer, pairs: Sequence[tuple[str, str]],
                      seconds: dict[str, float], progress: bool, device: DeviceLike = None) -> None:
    (root / "features").mkdir(parents=True, exist_ok=True)
    for source, domain in tqdm(pairs, desc="features (source × domain)", disable=not progress):
        rel = f"features/{_pair_key(source, domain)}.safetensors"
        if (root / rel).exists():
            continue
        t0 = time.perf_counter()
        x, y, tr, te = _pair_images(cfg, source, domain)
        prefix = featurizer.prefix_features(x, progress=False, device=device)
        save_tensors(root / rel, {"prefix_train": prefix[tr].contiguous(), "y_train": y[tr].contiguous(),
                                  "prefix_test": prefix[te].contiguous(), "y_test": y[te].contiguous()},
                     metadata={"source": source, "domain": domain})
        record_checksum(root, rel)
        seconds[f"features:{source}.{domain}"] = time.perf_counter() - t0


def _head_kwargs(cfg: DatasetZooConfig, zoo: "DatasetZoo", n_features: int) -> dict[str, Any]:
    """What the engine fine-tunes per dataset for the CH heads (collecting process and executor workers alike)."""
    head = nn.Linear(n_features, cfg.ways)
    spec = ParamSpec.select(head)

    def init(i: int, name: str) -> None:
        torch.manual_seed(cfg.seed + 1000 * (i + 1))
        head.reset_parameters()

    def loss(i: int, name: str) -> LossFn:
        d = zoo.data(name)
        return minibatch_cross_entropy(d.x_train, d.y_train, cfg.batch_size, cfg.seed + i)

    return {"model": head, "spec": spec, "trainable": spec.names, "init": init, "loss": loss, "steps": cfg.steps,
            "keep_last": cfg.keep_last, "lr": cfg.lr}


def _lora_kwargs(cfg: DatasetZooConfig, zoo: "DatasetZoo", model: nn.Module) -> dict[str, Any]:
    """What the engine fine-tunes per dataset for the LoRA variant (LoRA on conv_head + the head)."""
    hname = head_name(model, cfg.ways)
    lspec = ParamSpec.select(model, ["re:lora_", f"re:^{hname}\\."])
    lhead = model.get_submodule(hname)

    def init(i: int, name: str) -> None:
        torch.manual_seed(cfg.seed + 1000 * (i + 1))
        lhead.reset_parameters()
        reset_lora(model)

    def loss(i: int, name: str) -> LossFn:
        d = zoo.data(name, variant="lora")
        return minibatch_cross_entropy(d.x_train, d.y_train, cfg.batch_size, cfg.seed + i)

    return {"model": model, "spec": lspec, "trainable": lspec.names, "init": init, "loss": loss,
            "steps": cfg.lora_steps, "keep_last": cfg.lora_keep_last, "lr": cfg.lora_lr}


def dataset_head_setup(cfg: DatasetZooConfig, root: Path) -> dict[str, Any]:
    """An executor worker's :func:`_head_kwargs`, from the features already in ``root``."""
    zoo = DatasetZoo(root, _partial=True)
    return _head_kwargs(cfg, zoo, int(zoo.data(cfg.recipes()[0].name).x_train.shape[-1]))


def dataset_lora_setup(cfg: DatasetZooConfig, root: Path) -> dict[str, Any]:
    """An executor worker's :func:`_lora_kwargs`, from the prefix features already in ``root``."""
    return _lora_kwargs(cfg, DatasetZoo(root, _partial=True), ImageFeaturizer(cfg.backbone_settings()).lora_model())


def collect_dataset_zoo(cfg: DatasetZooConfig, root: str | Path, *, progress: bool = True,
                        device: DeviceLike = None, executor: str | Executor | None = None) -> "DatasetZoo":
    """Collect (or resume) the dataset zoo: features of every (source, domain) pool, then per dataset its head
    checkpoints and, with ``cfg.lora``, its LoRA checkpoints; the heads and adapters fine-tune on ``device``
    (default the CPU), as are the backbone's prefix features. ``executor="ray"`` trains the datasets'
    heads (and adapters) as Ray tasks that read the features from ``root``, bit-identical to a local collection
    with as many threads per process."""
    resolve_device(device)  # checked before anything is written
    make_executor(executor)
    root = Path(root)
    start_zoo(root, cfg)
    recipes = cfg.recipes()
    atomic_write_json(root / "datasets.json", {"datasets": [r.to_dict() for r in recipes]})
    seconds = read_timings(root)
    t0 = time.perf_counter()
    featurizer = ImageFeaturizer(cfg.backbone_settings())
    pairs = list(dict.fromkeys((r.source, r.domain) for r in recipes))
    _collect_features(cfg, root, featurizer, pairs, seconds, progress, device)
    seconds["features"] = time.perf_counter() - t0
    atomic_write_json(root / "timings.json", seconds)
    zoo = DatasetZoo(root, _partial=True)
    names = [r.name for r in recipes]

    # -- the CH heads: nn.Linear on pooled features ---------------------------------------------------------
    t1 = time.perf_counter()
    kw = _head_kwargs(cfg, zoo, featurizer.n_features)

    def rows(i: int, name: str, stored: dict[str, torch.Tensor]) -> list[dict]:
        d = zoo.data(name)
        acc = head_accuracy(stored["vectors"], d.x_test, d.y_test, cfg.ways)
        return [{"dataset": name, "step": cfg.steps - cfg.keep_last + j + 1, "test_acc": float(a)}
                for j, a in enumerate(acc)]

    collect_conditions(root / "heads", names, rows=rows, kind="dataset", folder="datasets",
                       seconds=read_timings(root / "heads"), progress=progress, device=device, executor=executor,
                       unit=("workbench.systems.d2nwg.zoo:dataset_head_setup", cfg, root), **kw)
    seconds["heads"] = time.perf_counter() - t1

    # -- the LoRA variant: LoRA on conv_head + the head, on prefix features, through the shared engine ----------
    if cfg.lora:
        t2 = time.perf_counter()
        lkw = _lora_kwargs(cfg, zoo, featurizer.lora_model())
        evaluator = MemberEvaluator(lkw["model"], lkw["spec"], probe=zoo.data(names[0], variant="lora").x_test[:4])

        def lrows(i: int, name: str, stored: dict[str, torch.Tensor]) -> list[dict]:
            d = zoo.data(name, variant="lora")
            acc = evaluator(stored["vectors"], d.x_test, d.y_test).accuracy
            return [{"dataset": name, "step": cfg.lora_steps - cfg.lora_keep_last + j + 1, "test_acc": float(a)}
                    for j, a in enumerate(acc)]

        collect_conditions(root / "lora", names, rows=lrows, kind="dataset", folder="datasets",
                           seconds=read_timings(root / "lora"), progress=progress, device=device, executor=executor,
                           unit=("workbench.systems.d2nwg.zoo:dataset_lora_setup", cfg, root), **lkw)
        seconds["lora"] = time.perf_counter() - t2
    atomic_write_json(root / "timings.json", seconds)
    return DatasetZoo(root)


class DatasetZoo:
    """A collected dataset zoo (implements :class:`~workbench.zoo.protocol.ParameterZoo`): members are heads (or,
    with ``variant="lora"``, LoRA + head vectors) grouped by dataset; inputs are frozen backbone features."""

    def __init__(self, root: str | Path, variant: str = "head", *, _partial: bool = False) -> None:
        self.root = Path(root)
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r}: use one of {VARIANTS}")
        if not (self.root / "config.json").exists() or not (self.root / "datasets.json").exists():
            raise FileNotFoundError(f"no dataset zoo at {self.root}: run collect_dataset_zoo(config, "
                                    f"{str(self.root)!r}) (it resumes)")
        self.variant = variant
        self.config = DatasetZooConfig.from_dict(read_json(self.root / "config.json"))
        self.recipes = {r.name: r for r in (DatasetRecipe.from_dict(d)
                                            for d in read_json(self.root / "datasets.json")["datasets"])}
        sub = self.root / ("heads" if variant == "head" else "lora")
        if not _partial:
            if variant == "lora" and not self.config.lora:
                raise ValueError(f"{self.root} was collected without the LoRA variant (lora=false)")
            if not (sub / "manifest.csv").exists():
                raise FileNotFoundError(f"the {variant} members of {self.root} are not collected yet: run "
                                        "collect_dataset_zoo again (it resumes)")
            self.manifest = pd.read_csv(sub / "manifest.csv")
        self._sub = sub
        self._pairs: dict[str, dict[str, torch.Tensor]] = {}
        self._vectors: dict[str, torch.Tensor] = {}
        self._featurizer: ImageFeaturizer | None = None
        self._model: nn.Module | None = None

    # -- structure ----------------------------------------------------------------------------------------
    @property
    def ways(self) -> int:
        """Classes per dataset."""
        return self.config.ways

    @property
    def featurizer(self) -> ImageFeaturizer:
        """The frozen backbone (built on first use: about 3 s)."""
        if self._featurizer is None:
            self._featurizer = ImageFeaturizer(self.config.backbone_settings())
        return self._featurizer

    @property
    def spec(self) -> ParamSpec:
        """The generated tensors: the head's weight and bias (or LoRA factors and head)."""
        return ParamSpec.from_dict(read_json(self._sub / "spec.json"))

    def model(self) -> nn.Module:
        """The network a member is loaded into: ``nn.Linear(features, ways)`` on pooled features (or the LoRA tail
        on prefix features)."""
        if self._model is None:
            if self.variant == "head":
                shape = dict(zip(self.spec.names, self.spec.shapes))["weight"]
                self._model = nn.Linear(shape[1], shape[0]).eval()
            else:
                self._model = self.featurizer.lora_model().eval()
        return self._model

    @property
    def conditions(self) -> list[Condition]:
        """Every dataset as a condition (kind ``dataset``): seen first, then the held-out ones."""
        return [Condition(name=r.name, kind="dataset", seen=r.seen, description=r.description())
                for r in self.recipes.values()]

    def names(self, kind: str | Sequence[str] | None = None) -> list[str]:
        """Dataset names of one kind (``seen``, ``unseen_combination``, ...), of several, or of all held-out kinds
        (``"unseen"``); None: every dataset."""
        if kind is None:
            return list(self.recipes)
        kinds = UNSEEN_KINDS if kind == "unseen" else ((kind,) if isinstance(kind, str) else tuple(kind))
        return [n for n, r in self.recipes.items() if r.kind in kinds]

    # -- members ------------------------------------------------------------------------------------------
    def vectors(self, condition: str | Sequence[str] | None = None) -> torch.Tensor:
        """Member vectors of the given datasets (default: the seen ones), dataset after dataset."""
        out = []
        for n in condition_names(self, condition):
            if n not in self._vectors:
                self._vectors[n] = read_condition(self._sub, "datasets", n, "dataset", n)["vectors"]
            out.append(self._vectors[n])
        return torch.cat(out)

    def dataset_ids(self, condition: str | Sequence[str] | None = None) -> torch.Tensor:
        """For every row of :meth:`vectors`, the index of its dataset among the given ones."""
        names = condition_names(self, condition)
        return torch.cat([torch.full((len(self.vectors(n)),), i) for i, n in enumerate(names)])

    def accuracies(self, condition: str | Sequence[str] | None = None, split: str = "test") -> np.ndarray:
        """Stored test accuracies (percent) of the checkpoints of the given datasets (default: the seen ones)."""
        if split != "test":
            raise ValueError(f"the dataset zoo stores test accuracies only, got split={split!r}")
        m = self.manifest
        return np.concatenate([m.loc[m["dataset"] == n, "test_acc"].to_numpy()
                               for n in condition_names(self, condition)])

    # -- data -----------------------------------------------------------------------------------------------
    def _pair(self, source: str, domain: str) -> dict[str, torch.Tensor]:
        key = _pair_key(source, domain)
        if key not in self._pairs:
            rel = f"features/{key}.safetensors"
            if (self.root / rel).exists():
                verify_checksum(self.root, rel, f"the features of {source} under {domain}")
                t = load_tensors(self.root / rel)
            else:  # a composed dataset outside the zoo: features computed now, kept in memory only
                x, y, tr, te = _pair_images(self.config, source, domain)
                prefix = self.featurizer.prefix_features(x)
                t = {"prefix_train": prefix[tr], "y_train": y[tr], "prefix_test": prefix[te], "y_test": y[te]}
            t["pooled_train"] = self.featurizer.pooled(t["prefix_train"])
            t["pooled_test"] = self.featurizer.pooled(t["prefix_test"])
            self._pairs[key] = t
        return self._pairs[key]

    def recipe(self, name: str) -> DatasetRecipe:
        """The recipe of a dataset of this zoo."""
        if name not in self.recipes:
            raise ValueError(f"unknown dataset {name!r}; this zoo has {len(self.recipes)} datasets, e.g. "
                             f"{list(self.recipes)[:3]} (compose new ones with data(DatasetRecipe(...)))")
        return self.recipes[name]

    def data(self, condition: str | DatasetRecipe | None = None, *, variant: str | None = None) -> TaskData:
        """A dataset's train/test split: pooled features for heads, prefix features for the LoRA variant. A
        :class:`DatasetRecipe` not in the zoo (a composed dataset) is built from its source and domain."""
        if condition is None:
            raise ValueError(f"a dataset zoo's data is per dataset: pass one of {list(self.recipes)[:3]}, ...")
        r = condition if isinstance(condition, DatasetRecipe) else self.recipe(condition)
        variant = variant or self.variant
        t = self._pair(r.source, r.domain)
        x_key = "pooled" if variant == "head" else "prefix"
        out = []
        for split in ("train", "test"):
            y = t[f"y_{split}"]
            keep = torch.isin(y, torch.as_tensor(r.classes))
            relabel = torch.full((max(int(y.max()), *r.classes) + 1,), -1, dtype=torch.long)
            relabel[torch.as_tensor(r.classes)] = torch.arange(len(r.classes))
            out += [t[f"{x_key}_{split}"][keep], relabel[y[keep]]]
        info = DatasetInfo(name=r.name, input_shape=tuple(out[0].shape[1:]), num_classes=len(r.classes),
                           class_names=tuple(str(c) for c in r.classes), n_train=len(out[1]), n_test=len(out[3]),
                           source=r.description(), seed=self.config.data_seed)
        return TaskData(out[0], out[1], out[2], out[3], info)

    def support(self, condition: str | DatasetRecipe, shots: int, *, seed: int = 0) -> SupportSet:
        """``shots`` examples per class drawn (seeded) from the dataset's **training** split: the test split is
        only ever used for scoring."""
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        d = self.data(condition, variant="head")
        g = torch.Generator().manual_seed(seed)
        idx = []
        for c in range(d.info.num_classes):
            pool = torch.nonzero(d.y_train == c).flatten()
            if len(pool) < shots:
                raise ValueError(f"class {c} of {d.info.name} has {len(pool)} training examples, fewer than "
                                 f"shots={shots}")
            idx.append(pool[torch.randperm(len(pool), generator=g)[:shots]])
        idx = torch.cat(idx)
        return SupportSet(d.x_train[idx], d.y_train[idx])

    def images(self, condition: str | DatasetRecipe, per_class: int = 4, split: str = "train") -> tuple[torch.Tensor,
                                                                                                        torch.Tensor]:
        """Raw images (under the dataset's domain) and labels of the first ``per_class`` examples of each class."""
        r = condition if isinstance(condition, DatasetRecipe) else self.recipe(condition)
        x, y, tr, te = _pair_images(self.config, r.source, r.domain)
        idx = torch.as_tensor(tr if split == "train" else te)
        xs, ys = [], []
        for k, c in enumerate(r.classes):
            sel = idx[y[idx] == c][:per_class]
            xs.append(x[sel])
            ys.append(torch.full((len(sel),), k))
        return torch.cat(xs), torch.cat(ys)

    def __len__(self) -> int:
        return int(self.manifest["dataset"].isin(self.names("seen")).sum())

    def describe(self) -> pd.DataFrame:
        """Per dataset: kind, source, domain, classes, split sizes, checkpoints and their test accuracy."""
        rows = []
        for n, r in self.recipes.items():
            acc = self.accuracies(n)
            d = self.data(n)
            rows.append({"dataset": n, "kind": r.kind, "source": r.source, "domain": r.domain,
                         "classes": "-".join(map(str, r.classes)), "n_train": d.info.n_train,
                         "n_test": d.info.n_test, "checkpoints": len(acc), "test_acc_mean": float(acc.mean()),
                         "test_acc_best": float(acc.max())})
        return pd.DataFrame(rows).set_index("dataset")
