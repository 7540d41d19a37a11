"""Collection protocols: dense checkpoints of a subset, dense checkpoints of everything, independent seeds.

Every protocol resumes: re-running ``collect`` on the same directory skips committed members and continues
an interrupted trajectory from its last saved state (or replays it deterministically from an earlier one).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from workbench.core.config import offset_seed
from workbench.core.device import DeviceLike, resolve_device
from workbench.core.faults import fault_point
from workbench.core.params import ParamSpec
from workbench.core.paths import seeded_name
from workbench.core.progress import tqdm
from workbench.data import batch_schedule, register_dataset, registered_dataset
from workbench.evaluation.evaluate import MemberEvaluator, split_model
from workbench.nn.architectures import build_model, register_architecture, registered_architecture
from workbench.zoo.config import DataConfig, ZooConfig
from workbench.zoo.executors import Executor, executor_scope, make_executor
from workbench.zoo.storage import Zoo, ZooStore, iter_chunks
from workbench.zoo.training import init_members, train_loop, train_vectorized

__all__ = ["collect", "collect_all", "SeedChunk", "train_seed_chunk", "check_data_fits_model", "registrations_of"]


def _rows(cfg: ZooConfig, ids: list[int], tr, te, extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"member_id": int(i), "protocol": cfg.protocol, "train_acc": float(tr.accuracy[k]),
         "test_acc": float(te.accuracy[k]), "train_loss": float(tr.loss[k]), "test_loss": float(te.loss[k]),
         **extra[k]}
        for k, i in enumerate(ids)
    ]


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def base_key(cfg: ZooConfig) -> str:
    """Identity of a dense protocol's base model: zoos agreeing on data, architecture, training and seed share it."""
    blob = json.dumps({k: cfg.to_dict()[k] for k in ("data", "arch", "train", "seed")}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _train_base(cfg: ZooConfig, store: ZooStore, data, progress: bool, base_cache: Path | None) -> nn.Module:
    """Train (or reload) the base model of a dense protocol (where ``data`` lives); ``base_cache`` shares it
    between zoos."""
    model = build_model(cfg.arch, seed=cfg.seed).to(data.x_train.device)
    saved = store.load_state("base")
    if saved is None and base_cache is not None:
        shared = ZooStore(base_cache).load_state(base_key(cfg))
        if shared is not None:
            store.save_state("base", *shared)
            saved = shared
    if saved is not None:
        model.load_state_dict(saved[0])
        return model
    model.train()
    t0 = time.perf_counter()
    hist = train_loop(model, data.x_train, data.y_train, cfg.train, progress=progress)
    meta = {"train_loss": hist, "seconds": time.perf_counter() - t0}
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    store.save_state("base", state, meta)
    if base_cache is not None:
        ZooStore(base_cache).save_state(base_key(cfg), state, meta)
    return model


def _collect_dense(cfg: ZooConfig, spec: ParamSpec, store: ZooStore, data, progress: bool,
                   base_cache: Path | None, device: torch.device = torch.device("cpu")) -> None:
    full = cfg.protocol == "dense_full"
    done = store.done_ids()
    if len(done) >= cfg.n_members:
        return
    model = _train_base(cfg, store, data, progress, base_cache).to(device)
    evaluator = MemberEvaluator(model, spec, probe=data.x_test, device=device)

    if full:
        # Every tensor is fine-tuned, in train mode (BatchNorm statistics move and are part of the member).
        prefix, suffix, name_map = nn.Identity(), model, {n: n for n in model.state_dict()}
        suffix.train()
    else:
        # Only the selected tensors move; the prefix is frozen, so its output is computed once, and BatchNorm
        # stays in eval mode so that the rest of the network is exactly the base checkpoint.
        prefix, suffix, name_map = split_model(model, spec.names, probe=data.x_test[:4])
        suffix.eval()
    with torch.no_grad():
        f_train = prefix(data.x_train) if not full else data.x_train
    trainable_suffix = [name_map[n] for n in spec.names if name_map[n] in dict(suffix.named_parameters())]
    buffers_selected = [n for n in spec.names if name_map[n] not in dict(suffix.named_parameters())]
    if buffers_selected and not full:
        raise ValueError(f"dense_subset selects buffers {buffers_selected[:3]}; they do not train with frozen "
                         "BatchNorm. Select weights/biases only (e.g. 'layer4.1.bn2.weight').")
    named = dict(suffix.named_parameters())
    for n, p in named.items():
        p.requires_grad_(n in trainable_suffix)
    params = [named[n] for n in trainable_suffix]
    opt = torch.optim.SGD(params, lr=cfg.checkpoint_lr, momentum=cfg.checkpoint_momentum,
                          weight_decay=cfg.train.weight_decay)

    # Resume point: the trajectory state saved after the last committed shard (or replay from the start).
    step = 0
    saved = store.load_state("trajectory")
    if saved is not None and any(m not in done for m in range(int(saved[1]["step"]) // cfg.save_every)):
        # members before the saved position were lost (a shard deleted, or moved aside by `zoo repair`): the
        # trajectory is deterministic, so replay it from the base model and commit only the missing members
        saved = None
    if saved is not None:
        tensors, meta = saved
        with torch.no_grad():
            for n, t in tensors.items():
                if n.startswith("param."):
                    suffix.state_dict()[n[6:]].copy_(t.to(device))
        opt.load_state_dict({"state": {i: {"momentum_buffer": tensors[f"momentum.{i}"].to(device)}
                                       for i in range(len(params)) if f"momentum.{i}" in tensors},
                             "param_groups": opt.state_dict()["param_groups"]})
        step = int(meta["step"])
    n_per_epoch = len(batch_schedule(len(data.y_train), cfg.train.batch_size, 0, cfg.data.seed))
    data_seed = cfg.train.data_seed + 1  # a different minibatch order from the base training

    total_steps = cfg.n_members * cfg.save_every
    bar = tqdm(total=cfg.n_members, initial=len(done), desc=f"{cfg.name}: checkpoints", disable=not progress)
    pending_ids: list[int] = []
    pending_vecs: list[torch.Tensor] = []
    pending_steps: list[int] = []
    while step < total_steps:
        epoch, k = divmod(step, n_per_epoch)
        idx = batch_schedule(len(data.y_train), cfg.train.batch_size, epoch, data_seed)[k].to(device)
        loss = nn.functional.cross_entropy(suffix(f_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % cfg.save_every:
            continue
        member = step // cfg.save_every - 1
        if member in done:
            continue  # replaying a trajectory past members that are already stored
        sd = suffix.state_dict()
        pending_ids.append(member)
        pending_vecs.append(torch.cat([sd[name_map[n]].detach().reshape(-1).float() for n in spec.names]).cpu())
        pending_steps.append(step)
        bar.update(1)
        if len(pending_ids) == cfg.chunk_size or step == total_steps:
            vecs = torch.stack(pending_vecs)
            tr = evaluator(vecs, data.x_train, data.y_train)
            te = evaluator(vecs, data.x_test, data.y_test)
            extra = [{"seed": cfg.seed, "step": s} for s in pending_steps]
            store.add_shard(_rows(cfg, pending_ids, tr, te, extra), vecs)
            fault_point("after_shard")
            state = {f"param.{n}": p.detach().cpu().clone() for n, p in zip(trainable_suffix, params)}
            for i, p in enumerate(params):
                buf = opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    state[f"momentum.{i}"] = buf.cpu().clone()
            if full:
                state.update({f"param.{n}": b.detach().cpu().clone() for n, b in suffix.named_buffers()
                              if b.is_floating_point()})
            store.save_state("trajectory", state, {"step": step})
            done.update(pending_ids)
            pending_ids, pending_vecs, pending_steps = [], [], []
    bar.close()


def _on_device(data, device: torch.device):
    """The dataset with its tensors on ``device`` (moved once, not per batch); itself when already there."""
    return data if data.x_train.device == device else data.to(device)


@dataclass(frozen=True)
class SeedChunk:
    """One work unit of the seeds protocol: members ``ids`` of the zoo ``config``, trained from scratch."""

    config: ZooConfig
    ids: tuple[int, ...]
    device: str = "cpu"  # where the chunk trains (a string: units travel to Ray workers)
    # your own dataset / network (registered in the collecting process), carried to workers that lack them
    registrations: tuple = ()


def registrations_of(config: ZooConfig) -> tuple:
    """The registered dataset and architecture a zoo config uses (what a worker process must register too)."""
    out = []
    entry = registered_dataset(config.data.name)
    if entry is not None:
        out.append(("data", config.data.name, entry))
    factory = registered_architecture(config.arch.name)
    if factory is not None:
        out.append(("arch", config.arch.name, factory))
    return tuple(out)


def _apply_registrations(registrations: tuple) -> None:
    for kind, name, entry in registrations:
        if kind == "data" and registered_dataset(name) is None:
            register_dataset(name, entry.x, entry.y, class_names=entry.class_names, standardise=entry.standardise)
        elif kind == "arch" and registered_architecture(name) is None:
            register_architecture(name, entry)


@lru_cache(maxsize=4)
def _cached_task_data(data: DataConfig):
    # a worker process trains many chunks on the same data: load it once per process
    return data.load()


def _task_data(data: DataConfig):
    # registered data can be re-registered under its name, so it is never cached by name (its split is cheap)
    return data.load() if registered_dataset(data.name) is not None else _cached_task_data(data)


def check_data_fits_model(config: ZooConfig, model: nn.Module, data) -> None:
    """Refuse, before anything is written, a network whose input or output does not fit the dataset."""
    x = data.x_test[:2]
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as e:  # the network's own message says which layer refused the input
        raise ValueError(f"zoo {config.name!r}: the network {config.arch.name!r} cannot take the inputs of dataset "
                         f"{config.data.name!r} (one example has shape {tuple(x.shape[1:])}; the arch config says "
                         f"input_shape={tuple(config.arch.input_shape)}): {type(e).__name__}: {e}") from None
    n_classes = data.info.num_classes
    if out.ndim != 2 or out.shape[1] != config.arch.num_classes:
        raise ValueError(f"zoo {config.name!r}: the network {config.arch.name!r} returns shape {tuple(out.shape)} "
                         f"for a batch of 2; it must return (batch, num_classes={config.arch.num_classes}) logits")
    if n_classes > config.arch.num_classes:
        raise ValueError(f"zoo {config.name!r}: dataset {config.data.name!r} has {n_classes} classes but the network "
                         f"has {config.arch.num_classes} outputs; set arch.num_classes={n_classes}")


def train_seed_chunk(unit: SeedChunk) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Train and evaluate one chunk of independent seeds: the member rows and their vectors (what one shard
    holds). A pure function of the unit, so any executor (this process, a Ray worker) computes the same bytes."""
    cfg = unit.config
    _apply_registrations(unit.registrations)
    fault_point("seed_chunk")  # tests kill a worker here
    template = build_model(cfg.arch, seed=cfg.seed)
    spec = ParamSpec.select(template, cfg.select, cfg.exclude)
    dev = resolve_device(unit.device)
    data = _on_device(_task_data(cfg.data), dev)
    all_params = set(dict(template.named_parameters()))
    vectorise = cfg.vectorized and not _has_batchnorm(template) and set(spec.names) <= all_params
    seeds = [cfg.seed + i for i in unit.ids]
    if vectorise:
        init = init_members(cfg.arch, seeds)
        states, _ = train_vectorized(cfg.arch, init, data.x_train, data.y_train, cfg.train,
                                     trainable=None if set(spec.names) == all_params else list(spec.names))
        vecs = spec.flatten_batch({**init, **{k: v.cpu() for k, v in states.items()}})
    else:
        vs = []
        for s in seeds:
            m = build_model(cfg.arch, seed=s).to(dev).train()
            train_loop(m, data.x_train, data.y_train, cfg.train)
            vs.append(spec.flatten(m.eval().cpu()))
        vecs = torch.stack(vs)
    evaluator = MemberEvaluator(template, spec, probe=data.x_test)
    tr = evaluator(vecs, data.x_train, data.y_train)
    te = evaluator(vecs, data.x_test, data.y_test)
    extra = [{"seed": s, "step": cfg.train.epochs} for s in seeds]
    return _rows(cfg, list(unit.ids), tr, te, extra), vecs


def _collect_seeds(cfg: ZooConfig, store: ZooStore, progress: bool, executor: Executor,
                   device: torch.device) -> None:
    template = build_model(cfg.arch, seed=cfg.seed)
    if not (store.root / "base.safetensors").exists():
        store.save_state("base", template.state_dict(), {"note": "template only: every member is generated whole"})
    done = store.done_ids()
    todo = [i for i in range(cfg.n_members) if i not in done]
    if not todo:
        return
    reg = registrations_of(cfg)
    units = [SeedChunk(cfg, tuple(chunk), str(device), reg) for chunk in iter_chunks(todo, cfg.chunk_size)]
    bar = tqdm(total=cfg.n_members, initial=len(done), desc=f"{cfg.name}: seeds ({executor.name})",
               disable=not progress)
    # only this process writes: each chunk is one atomic shard, committed as its result arrives
    for unit, (rows, vecs) in executor.map_unordered(train_seed_chunk, units):
        store.add_shard(rows, vecs)
        fault_point("after_seed_shard")
        bar.update(len(unit.ids))
    bar.close()


def collect(config: ZooConfig, root: str | Path, *, progress: bool = True, base_cache: str | Path | None = None,
            executor: str | Executor | None = None, device: DeviceLike = "cpu") -> Zoo:
    """Collect (or resume collecting) the zoo ``config`` into ``root``; returns the loaded zoo.

    ``base_cache``: a directory where trained base models are shared between zoos (see :func:`base_key`).
    ``executor``: where the seeds protocol's chunks are trained — ``"local"`` (default), ``"ray"`` (a local Ray),
    or an executor object such as ``RayExecutor(address)`` (see :mod:`workbench.zoo.executors`). The dense
    protocols are one trajectory each (every checkpoint continues the previous one), so they always run here.
    ``device``: where members train and are evaluated (``"auto"``: CUDA when present); the stored members are the
    same up to floating point on any device (the random streams are drawn on the CPU)."""
    make_executor(executor)  # a bad executor name is refused before anything is written
    dev = resolve_device(device)
    store = ZooStore(root)
    # The spec depends only on the architecture, and the data must load: both are checked before anything is
    # written, so a bad config leaves no half-made zoo directory behind.
    template = build_model(config.arch, seed=config.seed)
    spec = ParamSpec.select(template, config.select, config.exclude)
    data = _task_data(config.data)
    check_data_fits_model(config, template, data)
    store.init(config, spec, data_fingerprint=data.info.extra.get("fingerprint"))
    if config.protocol == "seeds":
        with executor_scope(executor) as ex:
            _collect_seeds(config, store, progress, ex, dev)
    else:
        _collect_dense(config, spec, store, _on_device(data, dev), progress, Path(base_cache) if base_cache else None,
                       dev)
    return Zoo(root)


#: Independent-seed zoos train member i from seed ``config.seed + i``: another run's seeds start at least this far
#: away (or a whole zoo's length away), so no member is shared between the runs of two seeds.
SEEDS_STRIDE = 100


def seeded_zoo_config(config: ZooConfig, seed: int) -> ZooConfig:
    """The zoo config with its collection seed moved by ``seed`` (0: unchanged): dense zoos get another base
    initialisation (and so another trajectory), independent-seed zoos another, disjoint, range of member seeds."""
    stride = max(SEEDS_STRIDE, config.n_members) if config.protocol == "seeds" else 1
    return offset_seed(config, seed, stride=stride)


def collect_all(configs: dict[str, ZooConfig], run_dir: str | Path, *, seed: int = 0,
                progress: bool = True, executor: str | Executor | None = None,
                device: DeviceLike = "cpu") -> dict[str, Zoo]:
    """Collect (or resume) several zoos, moved by ``seed``, into ``<run_dir>/zoos/<key>`` (``<key>_seed<k>`` for a
    seed other than 0); ``executor`` and ``device`` as in :func:`collect`."""
    run_dir = Path(run_dir)
    with executor_scope(executor) as ex:  # one Ray for all the zoos, not one per zoo
        return {k: collect(seeded_zoo_config(c, seed), run_dir / "zoos" / seeded_name(k, seed), progress=progress,
                           base_cache=run_dir / "bases", executor=ex, device=device) for k, c in configs.items()}
