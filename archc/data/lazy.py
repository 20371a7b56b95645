"""Examples read on demand (numpy only): a source that would not fit in memory hands over a `Lazy` as a split's x.

A `Lazy` stands where an (n, *shape) array stands: it has `len`, `shape`, `dtype` and `nbytes` (what the examples
take decoded), `x[i]` reads one example, `x[idx]` and `x[a:b]` read and stack those examples, and `select(idx)` is
a view of some of them that reads nothing (how a source is split into train/val/test without decoding it).
What reads one example is a `Reader`: a picklable object with `len` and `read(i)`, so that loader worker processes
(archc.train.loader) can decode examples in parallel. `np.asarray(lazy)` reads them all: for small splits only.

Whether a source's examples stay lazy or are read into one array is decided by their decoded size
(`in_memory`): small data keeps the fast path of arrays on the device. Where a whole split is run rather than
trained on (archc.runtime's Model.run: `archc infer`, the run's test report, `archc quantize`), a Lazy is read
`chunks` of CHUNK_BYTES at a time, and `concat` joins splits (`--split all`) without reading them.
"""
from __future__ import annotations

import os
from typing import Any, Protocol, Sequence

import numpy as np

# Decoded examples up to this size are read into one array (the fast path: batches are slices of it on the device);
# larger ones stay lazy and are read per batch. [data] in_memory overrides it.
IN_MEMORY_BYTES = 1 << 30
# Decoded examples a lazy input is read in at a time where a whole split is run (archc infer, the run's test report):
# chunks of this size bound the memory, and at 64 MiB a chunk still holds dozens of 224 px images.
CHUNK_BYTES = 64 << 20


class Reader(Protocol):
    """Reads example i of a source (0 <= i < len) as an array of the source's per-example shape and dtype; raises
    archc.errors.DataError naming the file when it cannot."""

    def __len__(self) -> int: ...

    def read(self, i: int) -> np.ndarray: ...

    def where(self, i: int) -> str:
        """What example i is, for messages (a file's path relative to the source)."""
        ...


class Lazy:
    """Examples of `reader` at positions `index` (all when None), each shaped `shape` of `dtype` once read."""

    def __init__(self, reader: Reader, shape: Sequence[int], dtype: Any, index: np.ndarray | None = None) -> None:
        self.reader = reader
        self.index = np.arange(len(reader), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
        self.example_shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)

    # ---- array-like -------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.example_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.example_shape)

    @property
    def nbytes(self) -> int:
        """What the examples take once read (decoded)."""
        return int(len(self.index) * int(np.prod(self.example_shape, dtype=np.int64)) * self.dtype.itemsize)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> np.ndarray:
        """x[i]: one example; x[idx] / x[a:b]: those examples read and stacked (n, *shape)."""
        if isinstance(key, (int, np.integer)):
            return self.read(int(key))
        positions = np.arange(len(self.index))[key] if isinstance(key, slice) else np.asarray(key).reshape(-1)
        out = np.empty((len(positions), *self.example_shape), dtype=self.dtype)
        for k, p in enumerate(positions.tolist()):
            out[k] = self.read(p)
        return out

    def read(self, position: int) -> np.ndarray:
        """Example at `position` of this view, checked against the declared shape."""
        a = self.reader.read(int(self.index[position]))
        if a.shape != self.example_shape:
            from archc.errors import DataError

            raise DataError(f"{self.where(position)}: expected an example shaped {list(self.example_shape)}, "
                            f"received {list(a.shape)}")
        return a.astype(self.dtype, copy=False)

    def where(self, position: int) -> str:
        return self.reader.where(int(self.index[position]))

    def select(self, idx: np.ndarray) -> "Lazy":
        """The examples at `idx` of this view, read nothing."""
        return Lazy(self.reader, self.example_shape, self.dtype, self.index[np.asarray(idx, dtype=np.int64)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"Lazy({len(self)} examples shaped {list(self.example_shape)} {self.dtype})"


class Concat:
    """The examples of several views one after another, as one Reader (picklable when theirs are)."""

    def __init__(self, parts: Sequence[Lazy]) -> None:
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, i: int) -> tuple[Lazy, int]:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k], i - int(self.starts[k])

    def read(self, i: int) -> np.ndarray:
        part, position = self._locate(i)
        return part.read(position)

    def where(self, i: int) -> str:
        part, position = self._locate(i)
        return part.where(position)


def concat(parts: Sequence["np.ndarray | Lazy"]) -> "np.ndarray | Lazy":
    """The examples of `parts` one after another, read nothing when any is lazy: views of one reader become one view
    (their positions joined), others a Concat reader; arrays are concatenated."""
    if not any(isinstance(p, Lazy) for p in parts):
        return np.concatenate(parts)
    lazies = [p if isinstance(p, Lazy) else Lazy(_Rows(p), p.shape[1:], p.dtype) for p in parts]
    first = lazies[0]
    if any(p.example_shape != first.example_shape or p.dtype != first.dtype for p in lazies):
        raise ValueError(f"concat: expected views of one example shape and dtype, received "
                         f"{', '.join(repr(p) for p in lazies)}")
    if all(p.reader is first.reader for p in lazies):
        return Lazy(first.reader, first.example_shape, first.dtype, np.concatenate([p.index for p in lazies]))
    return Lazy(Concat(lazies), first.example_shape, first.dtype)


class _Rows:
    """An array's rows as a Reader (what concat joins to lazy parts)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, i: int) -> np.ndarray:
        return self.rows[i]

    def where(self, i: int) -> str:
        return f"example {i}"


def chunks(n: int, example_bytes: int, batch_size: int | None = None,
           chunk_bytes: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) of consecutive chunks of n examples of `example_bytes` each decoded, each at most `chunk_bytes`
    (CHUNK_BYTES by default; at least one example) and a whole number of `batch_size` batches where one fits."""
    size = max(1, (chunk_bytes or CHUNK_BYTES) // max(1, example_bytes))
    if batch_size is not None and size > batch_size:
        size -= size % batch_size
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def is_lazy(x: Any) -> bool:
    return isinstance(x, Lazy)


def take(x: "np.ndarray | Lazy", idx: np.ndarray) -> "np.ndarray | Lazy":
    """x's examples at idx: a view for a Lazy (nothing read), an array's rows otherwise."""
    return x.select(idx) if isinstance(x, Lazy) else x[idx]


def memory_budget() -> int:
    """The decoded size up to which examples are read into memory by default: IN_MEMORY_BYTES, or an eighth of
    the machine's memory when that is less."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return IN_MEMORY_BYTES
    return min(IN_MEMORY_BYTES, total // 8)


def fits_in_memory(nbytes: int, in_memory: bool | None) -> bool:
    """Read the examples into one array? `in_memory` as the spec says, or by their decoded size (None)."""
    return bool(in_memory) if in_memory is not None else nbytes <= memory_budget()
