"""Zoo storage: safetensors shards + a manifest (one row per member) + config and ParamSpec as JSON.

A shard is the unit of commitment: it is written atomically and carries its members' manifest rows in
its safetensors header, so the manifest can always be rebuilt from the shards. A crash can therefore
lose at most the shard being written; it never leaves a member half-written or listed twice.
"""

from __future__ import annotations

import json
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from workbench.core.io import (
    CorruptFileError,
    atomic_write_csv,
    atomic_write_json,
    file_sha256,
    load_tensor_metadata,
    load_tensors,
    read_json,
    save_tensors,
)
from workbench.core.params import ParamSpec, check_finite
from workbench.nn.architectures import build_model
from workbench.zoo.config import ZooConfig
from workbench.zoo.protocol import Condition, condition_names

__all__ = ["ZooStore", "Zoo", "ZooMismatchError", "ZooCorruptError", "ShardProblem", "repair_zoo"]

MANIFEST = "manifest.csv"
CHECKSUMS = "checksums.json"
QUARANTINE = "quarantine"


class ZooMismatchError(ValueError):
    """A directory already holds a different zoo."""


@dataclass(frozen=True)
class ShardProblem:
    """One shard that cannot be used: ``kind`` is ``missing``, ``unreadable`` or ``checksum``."""

    shard: str
    kind: str
    members: tuple[int, ...]
    detail: str = ""

    def describe(self) -> str:
        """One line for an error message."""
        who = f"members {list(self.members)}" if self.members else "members unknown"
        what = {"missing": "is missing", "unreadable": "is unreadable",
                "checksum": "does not match its recorded checksum"}[self.kind]
        return f"shards/{self.shard} {what} ({who}){': ' + self.detail if self.detail else ''}"


class ZooCorruptError(CorruptFileError):
    """Some shards of a zoo are missing, unreadable or altered; nothing was changed on disk."""

    def __init__(self, root: Path, problems: list[ShardProblem]) -> None:
        self.root, self.problems = root, problems
        lines = "; ".join(p.describe() for p in problems)
        fix = []
        if any(p.kind != "missing" for p in problems):
            fix.append(f"`python -m workbench zoo repair {root}` moves the damaged shards aside (into "
                       f"{QUARANTINE}/, nothing is deleted)")
        fix.append("re-run the collection (`python -m workbench zoo collect`, or workbench.zoo.collect) to restore "
                   "the members")
        super().__init__(f"zoo {root}: {lines}. To fix: " + ", then ".join(fix))


@dataclass
class ShardScan:
    """What a zoo directory holds: the usable member rows, the problems, and the checksum index."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[ShardProblem] = field(default_factory=list)
    index: dict[str, dict[str, Any]] = field(default_factory=dict)


DATA_FINGERPRINT = "data.json"  # the fingerprint of a registered dataset the zoo was collected on


def check_data_fingerprint(root: Path, name: str, fingerprint: str | None) -> None:
    """Raise :class:`ZooMismatchError` when the dataset registered as ``name`` is not the one the zoo was
    collected on."""
    recorded = read_json(Path(root) / DATA_FINGERPRINT).get("fingerprint")
    if recorded != fingerprint:
        raise ZooMismatchError(
            f"zoo {root} was collected on other data than the dataset now registered as {name!r} (fingerprint "
            f"{recorded} recorded, {fingerprint} registered): register the same examples again, or collect into "
            "another directory")


class ZooStore:
    """Writer side of a zoo directory (used by the collection protocols).

    Every shard's sha256 and member ids are recorded in ``checksums.json`` when it is committed, so a shard that
    later changes on disk or disappears is noticed on load and named with the members it held."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.shards = self.root / "shards"

    def init(self, config: ZooConfig, spec: ParamSpec, data_fingerprint: str | None = None) -> None:
        """Create the directory, or check that it holds this very zoo (resume). ``data_fingerprint``: of a
        registered dataset, recorded so the zoo never resumes or evaluates on other data under the same name."""
        cfg_path = self.root / "config.json"
        spec_path = self.root / "spec.json"
        data_path = self.root / DATA_FINGERPRINT
        if data_fingerprint is not None and data_path.exists():
            check_data_fingerprint(self.root, config.data.name, data_fingerprint)
        # everything is checked before anything is written: a refused collection leaves the directory as it was
        if cfg_path.exists():
            old = read_json(cfg_path)
            if old != json.loads(json.dumps(config.to_dict())):
                raise ZooMismatchError(
                    f"{self.root} already holds a zoo with a different config; use another directory "
                    "or delete this one to start over")
        if spec_path.exists() and ParamSpec.load(spec_path) != spec:
            raise ZooMismatchError(f"{self.root}/spec.json differs from the spec of this collection")
        self.root.mkdir(parents=True, exist_ok=True)
        self.shards.mkdir(exist_ok=True)
        for tmp in self.root.rglob(".*.tmp"):  # leftovers of an interrupted atomic write (never a committed file)
            tmp.unlink()
        if not cfg_path.exists():
            atomic_write_json(cfg_path, config.to_dict())
        if not spec_path.exists():
            spec.save(spec_path)
        if data_fingerprint is not None and not data_path.exists():
            atomic_write_json(data_path, {"dataset": config.data.name, "fingerprint": data_fingerprint})

    # -- reading --------------------------------------------------------------------------------------------
    def checksums(self) -> dict[str, dict[str, Any]]:
        """The checksum index ``{shard name: {"sha256", "members"}}`` (empty for zoos written before it existed)."""
        path = self.root / CHECKSUMS
        return dict(read_json(path).get("shards", {})) if path.exists() else {}

    def scan(self, verify: bool = True) -> ShardScan:
        """Read every shard header (and, with ``verify``, its checksum); never changes anything on disk."""
        out = ShardScan(index=self.checksums())
        files = {p.name: p for p in sorted(self.shards.glob("shard-*.safetensors"))} if self.shards.exists() else {}
        for name, entry in out.index.items():
            if name not in files:
                out.problems.append(ShardProblem(name, "missing", tuple(entry.get("members", ()))))
        for name, path in files.items():
            entry = out.index.get(name)
            members = tuple(entry.get("members", ())) if entry else ()
            if verify and entry is not None and file_sha256(path) != entry.get("sha256"):
                out.problems.append(ShardProblem(name, "checksum", members, "its bytes changed after it was written"))
                continue
            try:
                rows = json.loads(load_tensor_metadata(path)["rows"])
            except (CorruptFileError, KeyError, ValueError) as e:
                out.problems.append(ShardProblem(name, "unreadable", members, str(e).split(";")[0][-160:]))
                continue
            out.rows.extend(rows)
        return out

    def rows(self, allow_missing: bool = False) -> list[dict[str, Any]]:
        """All committed member rows; raises :class:`ZooCorruptError` when a shard is damaged (or missing,
        unless ``allow_missing``: a collection redoes missing members)."""
        scan = self.scan()
        bad = [p for p in scan.problems if not (allow_missing and p.kind == "missing")]
        if bad:
            raise ZooCorruptError(self.root, bad)
        return scan.rows

    def done_ids(self) -> set[int]:
        """Member ids already committed (missing shards' members are not: the collection redoes them)."""
        return {int(r["member_id"]) for r in self.rows(allow_missing=True)}

    # -- writing ----------------------------------------------------------------------------------------------
    def add_shard(self, rows: list[dict[str, Any]], vectors: torch.Tensor) -> None:
        """Commit members: one atomic shard write, its checksum, then the manifest is refreshed."""
        if len(rows) != vectors.shape[0]:
            raise ValueError(f"{len(rows)} rows for {vectors.shape[0]} vectors")
        check_finite(vectors, "the member vectors")
        ids = [int(r["member_id"]) for r in rows]
        dup = set(ids) & self.done_ids()
        if dup:
            raise ValueError(f"members {sorted(dup)[:5]} are already stored")
        name = f"shard-{min(ids):06d}-{max(ids):06d}.safetensors"
        for i, r in enumerate(rows):
            r["shard"], r["index"] = name, i
        save_tensors(self.shards / name, {"vectors": vectors.float()}, metadata={"rows": json.dumps(rows)})
        # A crash here leaves a readable shard without an index entry: it is accepted (unverified) and indexed by
        # the next commit, so no member is lost or duplicated.
        self._write_index(extra={name: ids})
        self.write_manifest()

    def _write_index(self, extra: dict[str, list[int]] | None = None, drop: Iterable[str] = ()) -> None:
        index = self.checksums()
        for name in drop:
            index.pop(name, None)
        present = {p.name: p for p in self.shards.glob("shard-*.safetensors")}
        for name, ids in (extra or {}).items():
            index[name] = {"sha256": file_sha256(present[name]), "members": sorted(ids)}
        for name, path in present.items():  # shards committed just before a crash, not indexed yet
            if name not in index:
                try:
                    ids = [int(r["member_id"]) for r in json.loads(load_tensor_metadata(path)["rows"])]
                except (CorruptFileError, KeyError, ValueError):
                    continue  # a damaged, unindexed shard stays unindexed: scan() reports it
                index[name] = {"sha256": file_sha256(path), "members": ids}
        atomic_write_json(self.root / CHECKSUMS, {"algorithm": "sha256", "shards": dict(sorted(index.items()))})

    def manifest(self, rows: list[dict[str, Any]] | None = None) -> pd.DataFrame:
        """The member table (one row per member, in member-id order), with each shard's recorded sha256."""
        df = pd.DataFrame(self.rows() if rows is None else rows)
        if len(df):
            df = df.sort_values("member_id").reset_index(drop=True)
            sha = {k: v.get("sha256", "") for k, v in self.checksums().items()}
            df["shard_sha256"] = df["shard"].map(sha).fillna("")
        return df

    def write_manifest(self) -> pd.DataFrame:
        """Rewrite manifest.csv from the usable shards (atomic)."""
        df = self.manifest(self.rows(allow_missing=True))
        atomic_write_csv(self.root / MANIFEST, df)
        return df

    def save_state(self, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> None:
        """Save auxiliary state (base model, trajectory resume point) as safetensors + JSON metadata."""
        save_tensors(self.root / f"{name}.safetensors", tensors, metadata={"meta": json.dumps(meta or {})})

    def load_state(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Inverse of :meth:`save_state`, or None when absent."""
        path = self.root / f"{name}.safetensors"
        if not path.exists():
            return None
        return load_tensors(path), json.loads(load_tensor_metadata(path).get("meta", "{}"))


def repair_zoo(root: str | Path) -> dict[str, Any]:
    """Move damaged shards aside (into ``quarantine/<time>/``, never deleted) and forget missing ones, so that the
    next collection restores their members. Returns what was done."""
    store = ZooStore(root)
    if not (store.root / "config.json").exists():
        raise FileNotFoundError(f"{store.root} is not a zoo directory (no config.json)")
    scan = store.scan()
    moved, forgotten, members = [], [], []
    stamp, k = time.strftime("%Y%m%d-%H%M%S"), 0
    dest = store.root / QUARANTINE / stamp
    while dest.exists():  # never move a shard onto an earlier quarantined one
        k += 1
        dest = store.root / QUARANTINE / f"{stamp}-{k}"
    for p in scan.problems:
        members.extend(p.members)
        if p.kind == "missing":
            forgotten.append(p.shard)
            continue
        dest.mkdir(parents=True, exist_ok=True)
        (store.shards / p.shard).rename(dest / p.shard)
        moved.append(str(dest / p.shard))
    if scan.problems:
        store._write_index(drop=[p.shard for p in scan.problems])
        store.write_manifest()
    return {"root": str(store.root), "moved_aside": moved, "forgotten": forgotten,
            "members_to_recollect": sorted(set(members)), "ok": not scan.problems}


class Zoo:
    """A collected zoo, read-only: members' vectors, manifest, config, spec and base model."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "config.json").exists():
            raise FileNotFoundError(f"{self.root} is not a zoo directory (no config.json); collect it first "
                                    "with workbench.zoo.collect(...) or `python -m workbench zoo collect`")
        self.config = ZooConfig.from_dict(read_json(self.root / "config.json"))
        self.spec = ParamSpec.load(self.root / "spec.json")
        # read-only: a damaged shard is reported (file and members), never dropped or rewritten here
        self.manifest = ZooStore(self.root).manifest()
        if not len(self.manifest):
            raise ValueError(f"zoo {self.root} has no members yet; run the collection (it resumes)")
        self._vectors: torch.Tensor | None = None
        self._data = None

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def complete(self) -> bool:
        """True when every configured member is stored."""
        return len(self) >= self.config.n_members

    @property
    def conditions(self) -> list[Condition]:
        """One condition (``kind="none"``, the zoo's name): every member is trained for the same task."""
        return [Condition(name=self.config.name, kind="none")]

    def vectors(self, condition: str | Sequence[str] | None = None) -> torch.Tensor:
        """(N, P) float32 member vectors in member-id order."""
        condition_names(self, condition)  # an unconditional zoo has its one condition; any other name is an error
        if self._vectors is None:
            cache: dict[str, torch.Tensor] = {}
            out = []
            for shard, idx in zip(self.manifest["shard"], self.manifest["index"]):
                if shard not in cache:
                    cache[shard] = load_tensors(self.root / "shards" / shard)["vectors"]
                out.append(cache[shard][int(idx)])
            self._vectors = torch.stack(out)
        return self._vectors

    def base_state(self) -> dict[str, torch.Tensor]:
        """State dict of the base model (what stays fixed around the generated tensors)."""
        return load_tensors(self.root / "base.safetensors")

    def model(self, member: int | None = None, vector: torch.Tensor | None = None) -> nn.Module:
        """The base model, with member ``member`` (row index) or an explicit vector loaded."""
        m = build_model(self.config.arch)
        m.load_state_dict(self.base_state())
        if member is not None:
            if isinstance(member, bool) or not isinstance(member, numbers.Integral) \
                    or not -len(self) <= member < len(self):
                raise IndexError(f"zoo {self.config.name!r} has {len(self)} members (rows 0..{len(self) - 1}); "
                                 f"got member={member!r}")
            vector = self.vectors()[member]
        if vector is not None:
            self.spec.load_into(m, vector)
        return m.eval()

    def data(self, condition: str | None = None):
        """The dataset the zoo was trained on (same split)."""
        condition_names(self, condition)
        if self._data is None:
            data = self.config.data.load()
            if (self.root / DATA_FINGERPRINT).exists():
                check_data_fingerprint(self.root, self.config.data.name, data.info.extra.get("fingerprint"))
            self._data = data
        return self._data

    def accuracies(self, condition: str | None = None, split: str = "test") -> np.ndarray:
        """Stored member accuracies (percent) on ``split`` ("train" or "test"), in member-id order."""
        condition_names(self, condition)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.manifest[f"{split}_acc"].to_numpy()

    def describe(self) -> dict[str, Any]:
        """Small summary for tables."""
        acc = self.manifest["test_acc"]
        return {"zoo": self.config.name, "protocol": self.config.protocol, "members": len(self),
                "params": self.spec.numel, "test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std()),
                "test_acc_min": float(acc.min()), "test_acc_max": float(acc.max()),
                "distinct_test_acc": int(acc.round(4).nunique())}


def iter_chunks(ids: Iterable[int], size: int) -> list[list[int]]:
    """Split ids into consecutive chunks of at most ``size``."""
    ids = list(ids)
    return [ids[i:i + size] for i in range(0, len(ids), size)]
