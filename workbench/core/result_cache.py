"""Results computed once per run directory and loaded on every later run: a JSON file that holds the value and
the key it was computed for (settings, seeds, a fingerprint of the data). A changed key recomputes; a damaged or
half-written file recomputes too (writes are atomic, so the old file stays whole until the new one is complete)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import pandas as pd
import torch

from workbench.core.io import atomic_write_json

__all__ = ["cached_json", "key_digest", "data_fingerprint", "frame_to_json", "frame_from_json"]

T = TypeVar("T")


def _canonical(key: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def key_digest(key: Mapping[str, Any], n: int = 12) -> str:
    """A short stable name for ``key`` (e.g. a folder per distinct configuration)."""
    return hashlib.sha256(json.dumps(_canonical(key), sort_keys=True).encode()).hexdigest()[:n]


def data_fingerprint(*tensors: torch.Tensor | None, config: dict | None = None) -> str:
    """sha256 over the exact bytes of the data (and the config): what a run directory or a cached result was
    computed from."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    if config is not None:
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
    return h.hexdigest()


def cached_json(path: str | Path, key: Mapping[str, Any], compute: Callable[[], T]) -> T:
    """``compute()``'s JSON-serialisable value, stored in ``path`` with ``key``; loaded instead of recomputed when
    ``path`` holds the same key."""
    path, key = Path(path), _canonical(key)
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if isinstance(saved, dict) and saved.get("key") == key and "value" in saved:
                return saved["value"]
        except (OSError, ValueError, UnicodeDecodeError):
            pass  # unreadable: computed again and rewritten whole
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"key": key, "value": value})
    return value


def frame_to_json(frame: pd.DataFrame) -> dict[str, Any]:
    """A table as plain JSON values (full float precision, index and its name kept) for :func:`cached_json`."""
    d = frame.to_dict(orient="split")
    return {"index": [v.item() if hasattr(v, "item") else v for v in d["index"]], "index_name": frame.index.name,
            "columns": list(d["columns"]), "data": [[v.item() if hasattr(v, "item") else v for v in row]
                                                    for row in d["data"]]}


def frame_from_json(d: Mapping[str, Any]) -> pd.DataFrame:
    """The table written by :func:`frame_to_json`."""
    frame = pd.DataFrame(d["data"], index=d["index"], columns=d["columns"])
    frame.index.name = d["index_name"]
    return frame
