"""What the cache holds, and removing what no recent run used: `cnncodes cache` and `cnncodes cache prune`."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .store import LAST_USED, CodeStore
from .identity import ExtractionIdentity


@dataclass
class Entry:
    path: Path
    kind: str  # "codes store", "codes store of an older format", "ONNX graphs", "stat memo", "archive"
    images: int | None
    bytes: int
    last_used: float  # seconds since the epoch
    what: str  # the store's backbone and runtime, or what the entry is
    graph: str | None = None  # a store's ONNX graph

    @property
    def age_days(self) -> float:
        return (time.time() - self.last_used) / 86400


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _last_used(root: Path) -> float:
    try:
        return float((root / LAST_USED).read_text())
    except (OSError, ValueError):
        return root.stat().st_mtime


def cache_entries(cache_dir: Path) -> list[Entry]:
    cache_dir = Path(cache_dir)
    out = []
    for root in sorted((cache_dir / "stores").glob("*/")):
        try:
            identity = ExtractionIdentity(**json.loads((root / "identity.json").read_text()))
            summary = CodeStore(root, identity).summary()
            used = _last_used(root)
            out.append(Entry(root, "codes store", summary["images"], summary["bytes"], used,
                             f"{identity.backbone}, {identity.runtime} {identity.precision}", identity.graph))
        except (OSError, ValueError, TypeError):
            out.append(Entry(root, "damaged codes store", None, _size(root), _last_used(root), "unreadable"))
    for root in sorted((cache_dir / "codes").glob("*/")):  # stores named by a dataset's fingerprint (format 2)
        out.append(Entry(root, "codes store of an older format", None, _size(root), root.stat().st_mtime,
                         "never read again: its codes are computed once into the new stores"))
    graphs = cache_dir / "onnx"
    if graphs.is_dir():
        for graph in sorted(graphs.glob("*.onnx")):
            out.append(Entry(graph, "ONNX graph", None, graph.stat().st_size, graph.stat().st_mtime, graph.stem))
    memo = cache_dir / "files.sqlite"
    if memo.exists():
        out.append(Entry(memo, "stat memo", None, _size(memo), memo.stat().st_mtime, "file -> content key"))
    return out


def prune(cache_dir: Path, older_than_days: float, dry_run: bool = True) -> list[Entry]:
    """Codes stores and graphs unused for `older_than_days`, and stores of an older format: removed unless dry_run.
    The stat memo stays (it only saves reading files again)."""
    entries = cache_entries(cache_dir)
    stale = [e for e in entries if e.kind == "codes store of an older format"
             or e.kind in ("codes store", "damaged codes store") and e.age_days >= older_than_days]
    kept_graphs = " ".join(e.graph or "" for e in entries if e.kind == "codes store" and e not in stale)
    stale += [e for e in entries if e.kind == "ONNX graph" and e.age_days >= older_than_days
              and e.path.stem.split("-pixels-")[0] not in kept_graphs]
    doomed = stale
    if not dry_run:
        for entry in doomed:
            if entry.path.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                entry.path.unlink(missing_ok=True)
    return doomed
