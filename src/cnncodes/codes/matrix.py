"""A matrix of codes whose rows are read from disk only when asked for.

Codes of a million images take gigabytes; heads, reports and prediction read them in chunks of rows, so memory
follows the chunk, not the collection. Rows are read with plain positioned reads (os.preadv), not through a
memory map: mapped pages would count as the process's resident memory until the kernel needed them back.
Selecting rows or joining backbones side by side copies nothing: it only composes row indices.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CHUNK_BYTES = 64 << 20  # rows read at a time by chunks(): large enough for fast reads, small beside the data


class FileRows:
    """Rows of a matrix stored one after another in a file, read on demand: an .npy file of shape (n, d) (its header
    gives shape and dtype), or a headerless file of fixed-width rows given its shape and dtype (the store's rows)."""

    def __init__(self, path: Path, shape: tuple[int, int] | None = None, dtype=None):
        self.path, self.offset = Path(path), 0
        if shape is None:
            with open(self.path, "rb") as f:
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}[np.lib.format.read_magic(f)]
                shape, fortran, dtype = read_header(f)
                self.offset = f.tell()
            if fortran or len(shape) != 2:
                raise ValueError(f"{self.path} is not a C-ordered matrix")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows in the order given (repeats allowed): one read per run of consecutive rows."""
        rows = np.asarray(rows, np.int64)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        row_bytes = self.shape[1] * self.dtype.itemsize
        fd = os.open(self.path, os.O_RDONLY)
        try:
            flat = out.reshape(-1).view(np.uint8)
            for a, b in consecutive_runs(ordered):
                read_exactly(fd, flat[a * row_bytes:b * row_bytes], self.offset + int(ordered[a]) * row_bytes)
        finally:
            os.close(fd)
        if not np.array_equal(order, np.arange(len(order))):
            out[order] = out.copy()
        return out


def consecutive_runs(ordered: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) positions of the runs of consecutive values in sorted indices: one read or write each."""
    starts = np.flatnonzero(np.diff(ordered, prepend=-2) != 1)
    return list(zip(starts.tolist(), np.append(starts[1:], len(ordered)).tolist()))


def read_exactly(fd: int, into: np.ndarray, offset: int) -> None:
    view = memoryview(into)
    while len(view):
        n = os.preadv(fd, [view[:1 << 30]], offset)
        if n == 0:
            raise OSError(f"codes file ends early at byte {offset}")
        view, offset = view[n:], offset + n


class ArrayRows:
    """An in-memory array as a source of rows."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]


def _source(rows):
    """An array as a source of rows; anything else is one already."""
    return ArrayRows(rows) if isinstance(rows, np.ndarray) else rows


class StackedRows:
    """Sources of the same width one after the other (an image's codes, then its mirror image's)."""

    def __init__(self, sources: list):
        self.sources = [_source(s) for s in sources]
        self.starts = np.cumsum([0] + [len(s) for s in self.sources])
        self.shape = (int(self.starts[-1]), self.sources[0].shape[1])
        self.dtype = np.result_type(*[s.dtype for s in self.sources])

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        for k, source in enumerate(self.sources):
            mine = which == k
            if mine.any():
                out[mine] = source.take(rows[mine] - self.starts[k])
        return out


class CodeMatrix:
    """(n, d) codes: some rows of one or more sources placed side by side (the codes of several backbones).

    Indexing (x[rows], x[a:b], np.asarray(x)) reads and returns a NumPy array; select(), hstack() and vstack()
    return another CodeMatrix and read nothing. A source is anything with shape, dtype, len() and take(rows)."""

    def __init__(self, sources: list, rows: np.ndarray | None = None):
        self.sources = [_source(s) for s in sources]
        self.rows = np.arange(len(self.sources[0]), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        if any(len(s) != len(self.sources[0]) for s in self.sources):
            raise ValueError("sources side by side must have the same number of rows")
        self.shape = (len(self.rows), sum(s.shape[1] for s in self.sources))
        self.dtype = np.result_type(*[s.dtype for s in self.sources])
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"CodeMatrix(shape={self.shape}, dtype={self.dtype})"

    def select(self, rows) -> "CodeMatrix":
        """Some rows (a boolean mask or indices), without reading them."""
        return CodeMatrix(self.sources, self.rows[rows])

    def hstack(self, other) -> "CodeMatrix":
        """These codes beside other codes (an array or a matrix), row for row, without reading either."""
        return CodeMatrix([self, other])

    def vstack(self, other) -> "CodeMatrix":
        """These rows, then the rows of other codes of the same width, without reading either."""
        return CodeMatrix([StackedRows([self, other])])

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self._read(self.rows[rows])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            rows, cols = key
            return self[rows][:, cols]
        picked = self.rows[key]
        if np.ndim(picked) == 0:
            return self._read(np.array([picked]))[0]
        return self._read(picked)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        parts = [s.take(rows) for s in self.sources]
        return parts[0] if len(parts) == 1 else np.hstack(parts).astype(self.dtype, copy=False)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._read(self.rows)
        return out if dtype is None else out.astype(dtype, copy=False)


def chunk_rows(x) -> int:
    return max(1, CHUNK_BYTES // max(1, x.shape[1] * 4))


def chunks(x, rows: int | None = None):
    """(start, array) blocks of rows of an array or a CodeMatrix, in order: views for arrays, reads for matrices."""
    rows = rows or chunk_rows(x)
    for start in range(0, len(x), rows):
        yield start, x[start:start + rows]


def take(x, rows) -> "np.ndarray | CodeMatrix":
    """Rows of codes without reading them where they live on disk (a CodeMatrix), else a NumPy selection."""
    return x.select(rows) if isinstance(x, CodeMatrix) else x[rows]


def vstack(a, b):
    """Rows of a, then rows of b: a CodeMatrix when either lives on disk (nothing is read), else an array."""
    if isinstance(a, CodeMatrix) or isinstance(b, CodeMatrix):
        return (a if isinstance(a, CodeMatrix) else CodeMatrix([a])).vstack(b)
    return np.vstack([a, b])


def hstack(a, b):
    """a beside b, row for row: a CodeMatrix when either lives on disk (nothing is read), else an array."""
    if isinstance(a, CodeMatrix) or isinstance(b, CodeMatrix):
        return (a if isinstance(a, CodeMatrix) else CodeMatrix([a])).hstack(b)
    return np.hstack([a, b])
