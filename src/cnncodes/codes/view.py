"""The codes of a dataset's usable items, row for row with their ids, labels and splits: what heads train on.

The vectors usually stay in the store (a CodeMatrix reads rows when asked); save() writes one .npz for NumPy."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .matrix import CodeMatrix, chunks, hstack, take
from ..errors import CnnCodesError
from ..files import atomic_output


@dataclass
class Codes:
    """Codes of the usable items of a dataset, with everything needed to train on them."""

    vectors: "np.ndarray | CodeMatrix"  # (N, D) float32 (float16 for activation maps); on disk when extracted
    labels: np.ndarray  # (N,) int64
    ids: np.ndarray  # (N,) str
    splits: np.ndarray  # (N,) "train" / "validation" / "test" / "unlabeled" (label -1)
    class_names: list[str]
    backbone: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason)
    _unit: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)  # nearest()'s matrix

    def select(self, rows: np.ndarray) -> "Codes":
        """Some rows: a boolean mask over the rows, or row indices (in the order wanted)."""
        return Codes(take(self.vectors, rows), self.labels[rows], self.ids[rows], self.splits[rows], self.class_names,
                     self.backbone, self.skipped)

    def nearest(self, queries: np.ndarray, k: int = 12) -> tuple[np.ndarray, np.ndarray]:
        """(rows, similarities), each (queries, k), best first: the codes most similar to each query code, by the
        cosine of codes centred on these codes' mean (raw pooled activations are all positive, so every raw pair
        looks alike). Exact: one matrix product, no index (60,000 x 1,280 codes take milliseconds per query)."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if queries.shape[1] != self.vectors.shape[1]:
            raise CnnCodesError(f"query codes have {queries.shape[1]} features, these codes {self.vectors.shape[1]}")
        if self._unit is None:
            vectors = np.asarray(self.vectors)
            self._mean = vectors.mean(0, dtype=np.float64).astype(np.float32)
            unit = np.subtract(vectors, self._mean, dtype=np.float32)
            unit /= np.linalg.norm(unit, axis=1, keepdims=True) + 1e-12
            self._unit = unit
        q = queries - self._mean
        q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-12
        sims = q @ self._unit.T
        k = min(k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(-sims, top, 1).argsort(1, kind="stable")
        rows = np.take_along_axis(top, order, 1)
        return rows, np.take_along_axis(sims, rows, 1)

    def labelled(self) -> "Codes":
        """The rows that carry a label (audits, maps and cross-validation have no use for the others)."""
        return self if (self.labels >= 0).all() else self.select(self.labels >= 0)

    def part(self, *splits: str) -> tuple["np.ndarray | CodeMatrix", np.ndarray]:
        """(codes, labels) of some splits; codes on disk stay there (a CodeMatrix reads rows when asked)."""
        mask = np.isin(self.splits, splits)
        return take(self.vectors, mask), self.labels[mask]

    def save(self, path) -> None:
        """One .npz a user reads with np.load(path): codes, labels, ids, splits, class_names, backbone. The codes
        are copied chunk by chunk, so saving does not hold them all in memory."""
        small = dict(labels=self.labels, ids=self.ids.astype(str), splits=self.splits.astype(str),
                     class_names=np.array(self.class_names), backbone=np.array(self.backbone),
                     skipped=np.array([f"{i}\t{why}" for i, why in self.skipped], dtype=str))
        with atomic_output(Path(path)) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            with z.open("codes.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, {"descr": np.lib.format.dtype_to_descr(
                    np.dtype(self.vectors.dtype)), "fortran_order": False, "shape": tuple(self.vectors.shape)})
                for _, rows in chunks(self.vectors):
                    member.write(np.ascontiguousarray(rows).tobytes())
            for name, value in small.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, value, allow_pickle=False)

    @classmethod
    def load(cls, path) -> "Codes":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(vectors=z["codes"], labels=z["labels"], ids=z["ids"], splits=z["splits"],
                           class_names=list(z["class_names"]), backbone=str(z["backbone"]),
                           skipped=[tuple(s.split("\t", 1)) for s in z["skipped"]])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise CnnCodesError(f"{path} is not a cnncodes codes file ({exc})") from None

    def concat(self, other: "Codes") -> "Codes":
        """Codes of two backbones side by side, for the items both could use."""
        common = np.intersect1d(self.ids, other.ids)
        a, b = np.isin(self.ids, common), np.isin(other.ids, common)
        if not np.array_equal(self.ids[a], other.ids[b]):
            raise CnnCodesError("cannot concatenate codes of different datasets")
        skipped = dict(self.skipped) | dict(other.skipped)
        return Codes(hstack(take(self.vectors, a), take(other.vectors, b)), self.labels[a], self.ids[a], self.splits[a],
                     self.class_names, f"{self.backbone}+{other.backbone}", sorted(skipped.items()))


def self_similarity_blocks(unit: np.ndarray, block: int):
    """(start, similarities of rows start.. start + block to every row) block by block, each row's own entry set to
    -2 (below every cosine, so never its own neighbour): the exact all-pairs scan of unit rows (torch: its products
    and top-k use every core; NumPy's argpartition was most of the time of a neighbour graph)."""
    import torch

    every = torch.from_numpy(np.ascontiguousarray(unit, np.float32))
    for start in range(0, len(every), block):
        similarity = every[start:start + block] @ every.T
        similarity[:, start:start + block].fill_diagonal_(-2.0)
        yield start, similarity
