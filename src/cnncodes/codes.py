"""CNN codes on disk: shards with checksums and atomic commits, named by a fingerprint of their inputs.

An interrupted extraction resumes from its finished shards; a damaged shard is recomputed, never
loaded; codes made with other settings live under another name and are never reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .code_matrix import CodeMatrix, FileRows, chunks, hstack, take
from .errors import CnnCodesError
from .files import atomic_output, atomic_write

STORE_VERSION = 2
SHARD_SIZE = 2048


@dataclass
class Codes:
    """Codes of the usable items of a dataset, with everything needed to train on them."""

    vectors: "np.ndarray | CodeMatrix"  # (N, D) float32 (float16 for activation maps); on disk when extracted
    labels: np.ndarray  # (N,) int64
    ids: np.ndarray  # (N,) str
    splits: np.ndarray  # (N,) "train" / "validation" / "test"
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


def fingerprint(**inputs) -> str:
    """A short hash of everything that changes the codes (dataset content, weights, preprocessing, precision)."""
    blob = json.dumps(inputs, sort_keys=True, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class CodeStore:
    """One codes.npy file (n_items, feature_dim) that shards fill: shard K's rows are written in place, then
    committed by shard_K.json (the sha256 of those rows and the reasons of the items skipped in them).

    A shard whose rows do not match their commit is computed again; codes.npy opens with np.load(mmap_mode="r")
    and is read back as a CodeMatrix, so no step has to hold all codes in memory.
    Stores of format 1 (one .npz per shard) are moved into this form the first time they are opened."""

    def __init__(self, root: Path, n_items: int, feature_dim: int, meta: dict, shard_size: int = SHARD_SIZE,
                 dtype: str = "float32"):
        self.root, self.n_items, self.feature_dim, self.shard_size = Path(root), n_items, feature_dim, shard_size
        self.dtype = np.dtype(dtype)
        self.n_shards = max(1, -(-n_items // shard_size))
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "codes.npy"
        if not self.path.exists():
            self._create()
        self.offset, self.row_bytes = FileRows(self.path).offset, feature_dim * self.dtype.itemsize
        if list(self.root.glob("shard_*.npz")):
            self._move_format_1()
        manifest = self.root / "manifest.json"
        if not manifest.exists() or json.loads(manifest.read_text()).get("store_version") != STORE_VERSION:
            atomic_write(manifest, json.dumps(meta | {"n_items": n_items, "shard_size": shard_size,
                                                      "store_version": STORE_VERSION}, indent=1).encode())

    def _create(self) -> None:
        """A sparse file with the .npy header: filled shard by shard, never held in memory."""
        tmp = self.root / ".codes.npy.tmp"
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                     "fortran_order": False,
                                                     "shape": (self.n_items, self.feature_dim)})
            f.truncate(f.tell() + self.n_items * self.feature_dim * self.dtype.itemsize)
        os.replace(tmp, self.path)

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min(self.n_items, (k + 1) * self.shard_size))

    def _commit_path(self, k: int) -> Path:
        return self.root / f"shard_{k:05d}.json"

    def _rows_bytes(self, r: range) -> bytes:
        with open(self.path, "rb") as f:
            return os.pread(f.fileno(), len(r) * self.row_bytes, self.offset + r.start * self.row_bytes)

    def read_shard(self, k: int) -> dict | None:
        """{index: reason} of the items skipped in a committed, intact shard; None when it must be computed."""
        try:
            commit = json.loads(self._commit_path(k).read_text())
        except (OSError, ValueError):
            return None
        if commit.get("rows") != len(self.shard_range(k)) or \
                hashlib.sha256(self._rows_bytes(self.shard_range(k))).hexdigest() != commit.get("sha256"):
            return None
        return {int(i): why for i, why in commit.get("skipped", {}).items()}

    def write_rows(self, start: int, codes: np.ndarray) -> None:
        """Codes of consecutive items from `start`, in place; uncommitted until commit() of their shard."""
        data = np.ascontiguousarray(codes, self.dtype)
        if data.shape[1:] != (self.feature_dim,) or start + len(data) > self.n_items:
            raise ValueError(f"rows {start}..{start + len(data)} of width {data.shape[1:]} do not fit {self.path}")
        with open(self.path, "r+b") as f:
            os.pwrite(f.fileno(), data.tobytes(), self.offset + start * self.row_bytes)

    def commit(self, k: int, skipped: dict[int, str]) -> None:
        """Seal shard k: its rows reach the disk, then its commit names their hash."""
        with open(self.path, "r+b") as f:
            os.fsync(f.fileno())
        r = self.shard_range(k)
        commit = {"rows": len(r), "sha256": hashlib.sha256(self._rows_bytes(r)).hexdigest(),
                  "skipped": {str(i): why for i, why in skipped.items()}}
        atomic_write(self._commit_path(k), json.dumps(commit).encode())

    def write_shard(self, k: int, codes: np.ndarray, skipped: dict[int, str]) -> None:
        self.write_rows(self.shard_range(k).start, codes)
        self.commit(k, skipped)

    def read_all(self) -> dict:
        """Every shard that is committed and intact: {shard: {index: reason}}; the absent ones must be computed."""
        return {k: shard for k in range(self.n_shards) if (shard := self.read_shard(k)) is not None}

    def assemble(self, known: dict | None = None):
        """(codes as a CodeMatrix over codes.npy, usable mask, {index: reason}); `known` shards are not checked again."""
        known = known or {}
        ok = np.ones(self.n_items, bool)
        skipped = {}
        for k in range(self.n_shards):
            shard = known[k] if k in known else self.read_shard(k)
            if shard is None:
                raise CnnCodesError(f"codes store {self.root} is incomplete (shard {k}); run extraction again")
            skipped.update(shard)
        ok[list(skipped)] = False
        return CodeMatrix([FileRows(self.path)]), ok, skipped

    def _move_format_1(self) -> None:
        """Format 1 kept each shard in shard_K.npz, committed by the sha256 of that file: each intact one moves
        into codes.npy with a new commit; a damaged one is dropped (it will be computed again)."""
        import io

        for data_path in sorted(self.root.glob("shard_*.npz")):
            k = int(data_path.stem.split("_")[1])
            try:
                commit = json.loads(self._commit_path(k).read_text())
                raw = data_path.read_bytes()
                intact = hashlib.sha256(raw).hexdigest() == commit.get("sha256")
            except (OSError, ValueError):
                intact = False
            if intact and k < self.n_shards:
                with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                    codes = z["codes"]
                if codes.shape == (len(self.shard_range(k)), self.feature_dim) and codes.dtype == self.dtype:
                    self.write_shard(k, codes, {int(i): why for i, why in commit.get("skipped", {}).items()})
            data_path.unlink()
