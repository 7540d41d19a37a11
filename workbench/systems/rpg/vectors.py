"""Where a generator reads its zoo's parameter vectors from, window by window.

RPG's promise is memory that does not grow with the generated model. The zoo itself is N × P numbers; held in
memory it is exactly what grows. :class:`NpyVectors` reads only the slice a training window needs, straight from a
``.npy`` file with ``os.pread`` (not a memory map: pages touched through a map stay in the resident set, which is
what a memory budget and a peak-RSS measurement count). :class:`TensorVectors` is the in-memory view of the same
interface for zoos that fit comfortably (every zoo of the notebooks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

__all__ = ["VectorSource", "TensorVectors", "NpyVectors", "as_vector_source", "write_npy_vectors",
           "iter_member_chunks"]


@runtime_checkable
class VectorSource(Protocol):
    """N parameter vectors of P numbers, readable member by member and slice by slice."""

    def __len__(self) -> int: ...

    @property
    def n_params(self) -> int: ...

    def read(self, members: Sequence[int], lo: int, hi: int) -> torch.Tensor:
        """``vectors[members, lo:hi]`` as a float32 tensor (len(members), hi − lo)."""
        ...


class TensorVectors:
    """An in-memory (N, P) tensor as a :class:`VectorSource`."""

    def __init__(self, vectors: torch.Tensor) -> None:
        if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2:
            raise ValueError(f"vectors must be an (N, P) tensor, got {getattr(vectors, 'shape', type(vectors))}")
        if len(vectors) == 0:
            raise ValueError("no vectors to fit on: the zoo is empty")
        if not torch.isfinite(vectors).all():
            bad = (~torch.isfinite(vectors)).any(1).nonzero().flatten().tolist()
            raise ValueError(f"members {bad[:5]} hold NaN or Inf weights; drop or repair them before fitting")
        self.vectors = vectors.detach().float().cpu()

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def n_params(self) -> int:
        return self.vectors.shape[1]

    def read(self, members: Sequence[int], lo: int, hi: int) -> torch.Tensor:
        return self.vectors[torch.as_tensor(list(members), dtype=torch.long), lo:hi]


class NpyVectors:
    """An (N, P) float32 ``.npy`` file read slice by slice with ``os.pread``: memory = the slices asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no vector file {self.path}")
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if len(shape) != 2 or fortran or dtype != np.dtype("<f4"):
            raise ValueError(f"{self.path}: expected a C-ordered (N, P) float32 array, got shape {shape}, "
                             f"dtype {dtype}, fortran_order={fortran}; write it with write_npy_vectors")
        self.shape = (int(shape[0]), int(shape[1]))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_params(self) -> int:
        return self.shape[1]

    def read(self, members: Sequence[int], lo: int, hi: int) -> torch.Tensor:
        if not 0 <= lo <= hi <= self.n_params:
            raise ValueError(f"slice [{lo}, {hi}) outside the {self.n_params} parameters of {self.path}")
        out = np.empty((len(members), hi - lo), dtype=np.float32)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, m in enumerate(members):
                if not 0 <= int(m) < len(self):
                    raise IndexError(f"member {m} outside 0..{len(self) - 1}")
                start = self.offset + (int(m) * self.n_params + lo) * 4
                buf = os.pread(fd, (hi - lo) * 4, start)
                out[i] = np.frombuffer(buf, dtype=np.float32)
        finally:
            os.close(fd)
        t = torch.from_numpy(out)
        if not torch.isfinite(t).all():
            raise ValueError(f"{self.path}: NaN or Inf weights in members {list(members)[:5]} (parameters {lo}..{hi})")
        return t


def write_npy_vectors(path: str | Path, rows: Iterator[torch.Tensor] | torch.Tensor, n: int, p: int) -> NpyVectors:
    """Write N vectors of P float32 numbers to ``path`` row block by row block (never the whole zoo in memory)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, p))
    i = 0
    for block in ([rows] if isinstance(rows, torch.Tensor) else rows):
        block = block.detach().float().cpu().numpy().reshape(-1, p)
        arr[i:i + len(block)] = block
        i += len(block)
        arr.flush()
    del arr
    if i != n:
        tmp.unlink()
        raise ValueError(f"got {i} rows, expected {n}")
    os.replace(tmp, path)
    return NpyVectors(path)


def as_vector_source(vectors: torch.Tensor | VectorSource) -> VectorSource:
    """A tensor becomes a :class:`TensorVectors`; a source is returned as it is."""
    if isinstance(vectors, torch.Tensor):
        return TensorVectors(vectors)
    if isinstance(vectors, VectorSource):
        return vectors
    raise TypeError("vectors must be an (N, P) tensor or a VectorSource (e.g. NpyVectors), got "
                    f"{type(vectors).__name__}")


def iter_member_chunks(source: VectorSource, chunk: int) -> Iterator[torch.Tensor]:
    """Whole member rows, ``chunk`` at a time (for statistics fitted in one streaming pass)."""
    for s in range(0, len(source), chunk):
        yield source.read(range(s, min(s + chunk, len(source))), 0, source.n_params)
