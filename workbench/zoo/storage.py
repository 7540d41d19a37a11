"""Zoo storage: safetensors shards + a manifest (one row per member) + config and ParamSpec as JSON.

A shard is the unit of commitment: it is written atomically and carries its members' manifest rows in
its safetensors header, so the manifest can always be rebuilt from the shards. A crash can therefore
lose at most the shard being written; it never leaves a member half-written or listed twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch
import torch.nn as nn

from ..atomic_io import atomic_path, atomic_write_json, load_tensor_metadata, load_tensors, read_json, save_tensors
from ..params import ParamSpec, check_finite
from .architectures import build_model
from .config import ZooConfig

__all__ = ["ZooStore", "Zoo", "ZooMismatchError"]

MANIFEST = "manifest.csv"


class ZooMismatchError(ValueError):
    """A directory already holds a different zoo."""


class ZooStore:
    """Writer side of a zoo directory (used by the collection protocols)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.shards = self.root / "shards"

    def init(self, config: ZooConfig, spec: ParamSpec) -> None:
        """Create the directory, or check that it holds this very zoo (resume)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.shards.mkdir(exist_ok=True)
        for tmp in self.root.rglob(".*.tmp"):  # leftovers of an interrupted atomic write
            tmp.unlink()
        cfg_path = self.root / "config.json"
        if cfg_path.exists():
            old = read_json(cfg_path)
            if old != json.loads(json.dumps(config.to_dict())):
                raise ZooMismatchError(
                    f"{self.root} already holds a zoo with a different config; use another directory "
                    "or delete this one to start over")
        else:
            atomic_write_json(cfg_path, config.to_dict())
        spec_path = self.root / "spec.json"
        if spec_path.exists():
            if ParamSpec.load(spec_path) != spec:
                raise ZooMismatchError(f"{self.root}/spec.json differs from the spec of this collection")
        else:
            spec.save(spec_path)

    def rows(self) -> list[dict[str, Any]]:
        """All committed member rows, rebuilt from the shard headers."""
        rows = []
        for shard in sorted(self.shards.glob("shard-*.safetensors")):
            try:
                meta = load_tensor_metadata(shard)
            except Exception:
                shard.unlink()  # unreadable shard (should not happen with atomic writes): drop and redo
                continue
            rows.extend(json.loads(meta["rows"]))
        return rows

    def done_ids(self) -> set[int]:
        """Member ids already committed."""
        return {int(r["member_id"]) for r in self.rows()}

    def add_shard(self, rows: list[dict[str, Any]], vectors: torch.Tensor) -> None:
        """Commit members: one atomic shard write, then the manifest is refreshed."""
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
        self.write_manifest()

    def write_manifest(self) -> pd.DataFrame:
        """Rewrite manifest.csv from the shards (atomic)."""
        df = pd.DataFrame(self.rows())
        if len(df):
            df = df.sort_values("member_id").reset_index(drop=True)
        with atomic_path(self.root / MANIFEST) as tmp:
            df.to_csv(tmp, index=False)
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


class Zoo:
    """A collected zoo, read-only: members' vectors, manifest, config, spec and base model."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "config.json").exists():
            raise FileNotFoundError(f"{self.root} is not a zoo directory (no config.json); collect it first "
                                    "with workbench.zoo.collect(...) or `python -m workbench zoo collect`")
        self.config = ZooConfig.from_dict(read_json(self.root / "config.json"))
        self.spec = ParamSpec.load(self.root / "spec.json")
        store = ZooStore(self.root)
        self.manifest = store.write_manifest() if (self.root / "shards").exists() else pd.DataFrame()
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

    def vectors(self) -> torch.Tensor:
        """(N, P) float32 member vectors in member-id order."""
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
            vector = self.vectors()[member]
        if vector is not None:
            self.spec.load_into(m, vector)
        return m.eval()

    def data(self):
        """The dataset the zoo was trained on (same split)."""
        if self._data is None:
            self._data = self.config.data.load()
        return self._data

    def accuracies(self, split: str = "test") -> pd.Series:
        """Stored member accuracies (percent)."""
        return self.manifest[f"{split}_acc"]

    def describe(self) -> dict[str, Any]:
        """Small summary for tables."""
        acc = self.accuracies()
        return {"zoo": self.config.name, "protocol": self.config.protocol, "members": len(self),
                "params": self.spec.numel, "test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std()),
                "test_acc_min": float(acc.min()), "test_acc_max": float(acc.max()),
                "distinct_test_acc": int(acc.round(4).nunique())}


def iter_chunks(ids: Iterable[int], size: int) -> list[list[int]]:
    """Split ids into consecutive chunks of at most ``size``."""
    ids = list(ids)
    return [ids[i:i + size] for i in range(0, len(ids), size)]
