"""The codes store: codes of one extraction identity, keyed by image content.

    stores/<identity>/identity.json   what computed these codes (codes.identity), checked on every open
                      rows.bin        the codes, one fixed-width row after another, appended
                      index.sqlite    content key -> row, the row's CRC-32, or why the image cannot be used

A dataset is a view onto a store: its items' content keys pick rows, so relabelling, moving, renaming or
deleting images reads nothing new, and adding N images computes N. Rows are appended past the last committed
row and made durable (fsync) before one SQLite transaction makes them visible: a process killed at any moment
leaves only invisible bytes, overwritten by the next append. A row whose bytes no longer match its CRC is dropped
from the index when a view is opened and computed again. One writer at a time (an exclusive lock on the store);
readers need no lock.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import CnnCodesError
from ..files import atomic_write, write_json
from .identity import ExtractionIdentity
from .matrix import CHUNK_BYTES, CodeMatrix, FileRows

MISSING, SKIPPED = -1, -2  # rows of lookup(): not in the store / known to be unusable (reason in the index)
LAST_USED = "last_used"  # touched by every open: what `cnncodes cache prune` goes by


class CodeStore:
    def __init__(self, root: Path, identity: ExtractionIdentity):
        self.root, self.identity = Path(root), identity
        self.dtype = np.dtype(identity.dtype)
        self.width = identity.width
        self.row_bytes = self.width * self.dtype.itemsize
        self.rows_path, self.index_path = self.root / "rows.bin", self.root / "index.sqlite"
        self.root.mkdir(parents=True, exist_ok=True)
        stored = self.root / "identity.json"
        if stored.exists():
            try:
                found = json.loads(stored.read_text())
            except (OSError, ValueError):
                found = None
            if found != identity.to_dict():
                raise CnnCodesError(f"the codes store {self.root} holds codes of another extraction identity "
                                    f"({stored}); remove that folder (cnncodes cache prune) and run again")
        else:
            write_json(stored, identity.to_dict())
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS items (key TEXT PRIMARY KEY, row INTEGER, crc INTEGER, reason TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('rows', 0)")
        if not self.rows_path.exists():
            self.rows_path.touch()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.index_path, timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @contextmanager
    def _db(self):
        """A connection for one step, closed after it (sqlite3's own context manager leaves it open)."""
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    def committed_rows(self) -> int:
        with self._db() as db:
            return db.execute("SELECT value FROM meta WHERE name='rows'").fetchone()[0]

    def lookup(self, keys: list[str]) -> tuple[np.ndarray, dict[str, str], np.ndarray]:
        """(row of each key, or MISSING / SKIPPED; {key: reason} of the SKIPPED; CRC-32 of each row)."""
        with self._db() as db:
            known = {k: (row, crc, why) for k, row, crc, why in db.execute("SELECT key, row, crc, reason FROM items")}
        rows = np.full(len(keys), MISSING, np.int64)
        crcs = np.zeros(len(keys), np.int64)
        reasons = {}
        for n, key in enumerate(keys):
            found = known.get(key)
            if found is None:
                continue
            if found[0] is None:
                rows[n], reasons[key] = SKIPPED, found[2]
            else:
                rows[n], crcs[n] = found[0], found[1]
        return rows, reasons, crcs

    def damaged(self, rows: np.ndarray, crcs: np.ndarray) -> np.ndarray:
        """The rows (of those given, with their CRCs) whose bytes no longer match: read in large sorted chunks."""
        rows, crcs = np.asarray(rows, np.int64), np.asarray(crcs, np.int64)
        order = np.argsort(rows)
        source = FileRows(self.rows_path, (self.committed_rows(), self.width), self.dtype)
        size = os.path.getsize(self.rows_path)
        bad = []
        step = max(1, CHUNK_BYTES // self.row_bytes)
        for start in range(0, len(order), step):
            part = order[start:start + step]
            inside = (rows[part] + 1) * self.row_bytes <= size
            bad += rows[part[~inside]].tolist()
            part = part[inside]
            block = source.take(rows[part]).view(np.uint8).reshape(len(part), self.row_bytes)
            bad += [int(r) for r, raw, crc in zip(rows[part], block, crcs[part]) if zlib.crc32(raw) != crc]
        return np.array(sorted(set(bad)), np.int64)

    def forget(self, rows: np.ndarray) -> None:
        """Drop damaged rows from the index: their images are computed again (into new rows)."""
        with self._db() as db:
            db.executemany("DELETE FROM items WHERE row = ?", [(int(r),) for r in rows])

    @contextmanager
    def writer(self):
        """The store's one writer: holds an exclusive lock; yields append(keys, codes, reasons)."""
        lock = open(self.root / "lock", "a")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CnnCodesError(f"another cnncodes process is extracting into {self.root}: wait for it to "
                                    "finish (its codes will be reused)") from None
            rows_file = open(self.rows_path, "r+b")
            db = self._connect()
            try:
                next_row = [db.execute("SELECT value FROM meta WHERE name='rows'").fetchone()[0]]

                def append(keys: list[str], codes: np.ndarray, reasons: dict[int, str]) -> None:
                    """Codes of items (zero rows where reasons says why an item is unusable), made durable, then
                    visible in one transaction. A key given twice is stored once."""
                    data = np.ascontiguousarray(codes, self.dtype)
                    if data.shape != (len(keys), self.width):
                        raise ValueError(f"codes of shape {data.shape} do not fit {self.root} (width {self.width})")
                    good = [n for n in range(len(keys)) if n not in reasons]
                    block = data[good]
                    start = next_row[0]
                    os.pwrite(rows_file.fileno(), block.tobytes(), start * self.row_bytes)
                    os.fsync(rows_file.fileno())
                    raw = block.view(np.uint8).reshape(len(good), self.row_bytes)
                    entries = [(keys[n], start + m, zlib.crc32(raw[m]), None) for m, n in enumerate(good)]
                    entries += [(keys[n], None, None, why) for n, why in reasons.items()]
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?)", entries)
                    db.execute("UPDATE meta SET value = ? WHERE name='rows'", (start + len(good),))
                    db.execute("COMMIT")
                    next_row[0] = start + len(good)

                yield append
            finally:
                db.close()
                rows_file.close()
        finally:
            lock.close()

    def matrix(self, rows: np.ndarray) -> CodeMatrix:
        """These rows as a CodeMatrix: read from rows.bin when a step asks for them."""
        return CodeMatrix([FileRows(self.rows_path, (self.committed_rows(), self.width), self.dtype)], rows)

    def summary(self) -> dict:
        with self._db() as db:
            images = db.execute("SELECT COUNT(*) FROM items WHERE row IS NOT NULL").fetchone()[0]
            skipped = db.execute("SELECT COUNT(*) FROM items WHERE row IS NULL").fetchone()[0]
        size = sum(f.stat().st_size for f in self.root.iterdir() if f.is_file())
        return {"images": images, "skipped": skipped, "bytes": size}


def open_store(cache_dir: Path, identity: ExtractionIdentity) -> CodeStore:
    """The store of an identity in a cache, marked as used now (see codes.cache.prune)."""
    store = CodeStore(Path(cache_dir) / "stores" / identity.folder_name(), identity)
    atomic_write(store.root / LAST_USED, str(time.time()).encode())
    return store
