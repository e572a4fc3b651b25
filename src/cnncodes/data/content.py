"""What an image is, whatever its name, folder or label: a hash of its file's bytes (or of its pixels, for arrays).

Codes are stored under these keys, so a relabelled, moved or renamed image keeps its codes, and the same image
twice is computed once. Hashing 60,000 files on every run would read them all; a stat memo (path, size, mtime,
ctime, inode -> key, as git's index keeps) lets an unchanged file be recognised from its metadata alone. A file
changed within MEMO_MARGIN_NS of being hashed is hashed again next time (git's "racily clean" entries), since a
write in the same clock tick leaves its metadata unchanged.
"""
from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import stat
import time
from pathlib import Path

import numpy as np

from .images import TRANSIENT_ERRNOS

MEMO_MARGIN_NS = 2_000_000_000
READ_BLOCK = 1 << 20


def pixels_key(pixels: np.ndarray) -> str:
    """The key of an image held in memory: its shape and its pixels."""
    h = hashlib.sha256(f"{pixels.shape}:{pixels.dtype.str}".encode())
    h.update(np.ascontiguousarray(pixels).data)
    return "px:" + h.hexdigest()[:32]


def file_sha256(path) -> str:
    """The hex SHA-256 of a file's bytes, read a block at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_BLOCK):
            h.update(block)
    return h.hexdigest()


def file_key(path: Path) -> str:
    return "file:" + file_sha256(path)[:32]


class StatMemo:
    """path -> content key, remembered in one SQLite file of the cache (shared by all collections)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS memo (path BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                   "ctime_ns INTEGER, inode INTEGER, hashed_ns INTEGER, key TEXT)")
        return db

    def keys(self, paths: list) -> list[str]:
        """For each path its content key ("file:..."), or why it cannot be read (a plain reason, never stored:
        a file made readable later is read on the next run). A transient error raises OSError."""
        names = [os.fsencode(os.path.abspath(p)) for p in paths]  # bytes: file names need not be UTF-8
        with self._connect() as db:
            known = {}
            for start in range(0, len(names), 900):  # SQLite's limit on parameters
                part = names[start:start + 900]
                known.update((row[0], row[1:]) for row in db.execute(
                    f"SELECT path, size, mtime_ns, ctime_ns, inode, hashed_ns, key FROM memo WHERE path IN "
                    f"({','.join('?' * len(part))})", part))
            out, fresh = [], []
            for name, path in zip(names, paths):
                try:
                    st = os.stat(path)
                    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
                        out.append("not a regular file")
                        continue
                    stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                    memo = known.get(name)
                    if memo and tuple(memo[:4]) == stamp and memo[4] - max(stamp[1], stamp[2]) > MEMO_MARGIN_NS:
                        out.append(memo[5])
                        continue
                    key = file_key(path)
                except OSError as exc:
                    if exc.errno in TRANSIENT_ERRNOS:
                        raise
                    out.append(_reason(exc))
                    continue
                out.append(key)
                fresh.append((name, *stamp, time.time_ns(), key))
            if fresh:
                db.executemany("INSERT OR REPLACE INTO memo VALUES (?, ?, ?, ?, ?, ?, ?)", fresh)
        db.close()
        return out


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "missing: no such file"
    return f"cannot read: {exc.strerror or exc}"


def is_key(value: str) -> bool:
    return value.startswith(("file:", "px:"))
