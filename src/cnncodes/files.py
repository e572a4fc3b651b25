"""Writing files so that a reader never sees half of one: every output of cnncodes goes through here."""
from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, rename: readers never see half a file."""
    with atomic_output(path) as f:
        f.write(data)


@contextmanager
def atomic_output(path: Path):
    """A binary file to write into, renamed to `path` (after fsync) only when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_json(path: Path, value) -> None:
    atomic_write(path, json.dumps(value, indent=1).encode())


def atomic_path(build, path: Path, overwrite: bool = False) -> Path:
    """For writers that want a path, not a file (ONNX export, quantisation): build(tmp) writes a temporary file
    beside `path`, which is flushed to disk and renamed; once unless overwrite. An error leaves no half file and
    keeps any previous one."""
    path = Path(path)
    if path.exists() and not overwrite:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        build(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
