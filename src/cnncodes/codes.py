"""CNN codes on disk: shards with checksums and atomic commits, named by a fingerprint of their inputs.

An interrupted extraction resumes from its finished shards; a damaged shard is recomputed, never
loaded; codes made with other settings live under another name and are never reused.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import CnnCodesError
from .files import atomic_write, npz_bytes

STORE_VERSION = 1
SHARD_SIZE = 2048


@dataclass
class Codes:
    """Codes of the usable items of a dataset, with everything needed to train on them."""

    vectors: np.ndarray  # (N, D) float32 (float16 for activation maps): one code per usable item
    labels: np.ndarray  # (N,) int64
    ids: np.ndarray  # (N,) str
    splits: np.ndarray  # (N,) "train" / "validation" / "test"
    class_names: list[str]
    backbone: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item id, reason)
    _unit: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)  # nearest()'s matrix

    def select(self, rows: np.ndarray) -> "Codes":
        """Some rows: a boolean mask over the rows, or row indices (in the order wanted)."""
        return Codes(self.vectors[rows], self.labels[rows], self.ids[rows], self.splits[rows], self.class_names,
                     self.backbone, self.skipped)

    def nearest(self, queries: np.ndarray, k: int = 12) -> tuple[np.ndarray, np.ndarray]:
        """(rows, similarities), each (queries, k), best first: the codes most similar to each query code, by the
        cosine of codes centred on these codes' mean (raw pooled activations are all positive, so every raw pair
        looks alike). Exact: one matrix product, no index (60,000 x 1,280 codes take milliseconds per query)."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if queries.shape[1] != self.vectors.shape[1]:
            raise CnnCodesError(f"query codes have {queries.shape[1]} features, these codes {self.vectors.shape[1]}")
        if self._unit is None:
            self._mean = self.vectors.mean(0, dtype=np.float64).astype(np.float32)
            unit = np.subtract(self.vectors, self._mean, dtype=np.float32)
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

    def part(self, *splits: str) -> tuple[np.ndarray, np.ndarray]:
        mask = np.isin(self.splits, splits)
        return self.vectors[mask], self.labels[mask]

    def save(self, path) -> None:
        """One .npz a user reads with np.load(path): codes, labels, ids, splits, class_names, backbone."""
        atomic_write(Path(path), npz_bytes(
            codes=self.vectors, labels=self.labels, ids=self.ids.astype(str), splits=self.splits.astype(str),
            class_names=np.array(self.class_names), backbone=np.array(self.backbone),
            skipped=np.array([f"{i}\t{why}" for i, why in self.skipped], dtype=str),
        ))

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
        return Codes(np.hstack([self.vectors[a], other.vectors[b]]), self.labels[a], self.ids[a], self.splits[a],
                     self.class_names, f"{self.backbone}+{other.backbone}", sorted(skipped.items()))


def fingerprint(**inputs) -> str:
    """A short hash of everything that changes the codes (dataset content, weights, preprocessing, precision)."""
    blob = json.dumps(inputs, sort_keys=True, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class CodeStore:
    """A folder of shards: shard_K.npz (codes + usable mask) committed by shard_K.json (its sha256)."""

    def __init__(self, root: Path, n_items: int, feature_dim: int, meta: dict, shard_size: int = SHARD_SIZE,
                 dtype: str = "float32"):
        self.root, self.n_items, self.feature_dim, self.shard_size = Path(root), n_items, feature_dim, shard_size
        self.dtype = np.dtype(dtype)
        self.n_shards = max(1, -(-n_items // shard_size))
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.root / "manifest.json"
        if not manifest.exists():
            atomic_write(manifest, json.dumps(meta | {"n_items": n_items, "shard_size": shard_size,
                                                      "store_version": STORE_VERSION}, indent=1).encode())

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min(self.n_items, (k + 1) * self.shard_size))

    def _paths(self, k: int) -> tuple[Path, Path]:
        return self.root / f"shard_{k:05d}.npz", self.root / f"shard_{k:05d}.json"

    def read_shard(self, k: int):
        """(codes, usable mask, {index: reason}) of a committed, intact shard; None when it must be computed."""
        data_path, commit_path = self._paths(k)
        try:
            commit = json.loads(commit_path.read_text())
            raw = data_path.read_bytes()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(raw).hexdigest() != commit.get("sha256"):
            return None
        import io

        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            codes, ok = z["codes"], z["ok"]
        if codes.shape != (len(self.shard_range(k)), self.feature_dim) or codes.dtype != self.dtype:
            return None
        return codes, ok, {int(i): why for i, why in commit.get("skipped", {}).items()}

    def write_shard(self, k: int, codes: np.ndarray, ok: np.ndarray, skipped: dict[int, str]) -> None:
        data_path, commit_path = self._paths(k)
        raw = npz_bytes(codes=codes.astype(self.dtype), ok=ok)
        atomic_write(data_path, raw)
        commit = {"sha256": hashlib.sha256(raw).hexdigest(), "skipped": {str(i): why for i, why in skipped.items()}}
        atomic_write(commit_path, json.dumps(commit).encode())

    def read_all(self) -> dict:
        """Every shard that is committed and intact, by index; the absent ones must be computed."""
        return {k: shard for k in range(self.n_shards) if (shard := self.read_shard(k)) is not None}

    def assemble(self, known: dict | None = None):
        """All shards concatenated: (codes, usable mask, {index: reason}); `known` shards are not read again."""
        known = known or {}
        codes = np.empty((self.n_items, self.feature_dim), self.dtype)
        ok = np.zeros(self.n_items, bool)
        skipped = {}
        for k in range(self.n_shards):
            shard = known[k] if k in known else self.read_shard(k)
            if shard is None:
                raise CnnCodesError(f"codes store {self.root} is incomplete (shard {k}); run extraction again")
            r = self.shard_range(k)
            codes[r.start:r.stop], ok[r.start:r.stop] = shard[0], shard[1]
            skipped.update(shard[2])
        return codes, ok, skipped
