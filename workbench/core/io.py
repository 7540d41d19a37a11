"""Atomic file writes (a crash leaves either the old file or the new one, never half of one), checksums, and
directories that are published complete or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from workbench.core.faults import fault_point

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "atomic_write_csv", "save_tensors",
           "load_tensors", "load_tensor_metadata", "read_json", "file_sha256", "CorruptFileError", "staged_directory",
           "record_checksum", "verify_checksum"]


class CorruptFileError(ValueError):
    """A file is unreadable or does not match the checksum recorded when it was written."""


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask (read without changing it on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # make the bytes durable before the rename publishes them
            os.fsync(f.fileno())
        # mkstemp (and safetensors' writer) leave 0600: publish with the mode a plain open() would have given, so
        # reports, manifests and weights stay readable by the other users of a shared run directory
        os.chmod(tmp_path, _new_file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (sorted keys are not forced: insertion order is kept for readability)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default))


def atomic_write_csv(path: str | Path, frame: pd.DataFrame, **kw: Any) -> None:
    """Write a DataFrame as CSV atomically (``kw`` go to ``DataFrame.to_csv``; index off unless asked)."""
    kw.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kw)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


CHECKSUMS = "checksums.json"


def record_checksum(root: str | Path, relpath: str) -> None:
    """Record the sha256 of ``root/relpath`` in ``root/checksums.json`` (after the file was written atomically)."""
    root = Path(root)
    index = read_json(root / CHECKSUMS) if (root / CHECKSUMS).exists() else {"algorithm": "sha256"}
    files = dict(index.get("files", {}))
    files[relpath] = file_sha256(root / relpath)
    atomic_write_json(root / CHECKSUMS, {**index, "files": dict(sorted(files.items()))})


def verify_checksum(root: str | Path, relpath: str, what: str = "") -> None:
    """Raise :class:`CorruptFileError` when ``root/relpath`` no longer matches its recorded sha256 (files written
    before checksums existed are not checked)."""
    root = Path(root)
    if not (root / CHECKSUMS).exists():
        return
    expected = read_json(root / CHECKSUMS).get("files", {}).get(relpath)
    if expected is not None and (root / relpath).exists() and file_sha256(root / relpath) != expected:
        raise CorruptFileError(f"{root / relpath}{' (' + what + ')' if what else ''} does not match the checksum "
                               "recorded when it was written: it was altered or damaged. Delete it and re-run the "
                               "collection, which redoes only that file")


@contextmanager
def staged_directory(target: str | Path, marker: str) -> Iterator[Path]:
    """Write a bundle of files into a staging folder, then publish it into ``target`` so that ``marker`` (the file
    a reader opens first) appears last: a reader sees the complete bundle or no marker at all, never a mix.

    Other entries of ``target`` (e.g. a ``checkpoints/`` folder of a resumable fit) are left in place."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file, not a directory; choose a directory to save into")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent))
    try:
        yield stage
        if not (stage / marker).exists():
            raise RuntimeError(f"staged bundle for {target} has no {marker}")
        target.mkdir(parents=True, exist_ok=True)
        # unpublish first: from here until the marker is moved, the target holds no complete bundle
        (target / marker).unlink(missing_ok=True)
        for f in sorted(stage.iterdir()):
            fault_point("publish")
            if f.name != marker:
                if (target / f.name).is_dir():
                    shutil.rmtree(target / f.name)
                os.replace(f, target / f.name)
        os.replace(stage / marker, target / marker)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def read_json(path: str | Path) -> Any:
    """Read JSON with a clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e}); the file is corrupt — restore it or delete it "
                               "and re-run the step that wrote it") from None


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically."""

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata=dict(metadata) if metadata else None)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file with a clear error when it is missing or corrupt."""

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptFileError(f"{path} is not a readable safetensors file ({e}); it is corrupt — delete it and "
                               "re-run the step that wrote it (finished work elsewhere is kept)") from None


def load_tensor_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header (clear error when the file is missing or corrupt)."""

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptFileError(f"{path} has no readable safetensors header ({e}); it is corrupt") from None
