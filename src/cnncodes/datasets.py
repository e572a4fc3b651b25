"""Where images and labels come from: a folder of class folders, the CIFAR-10 archive, or arrays.

Every dataset is a list of items (a stable id, a label, a split) plus a way to read item i as RGB.
Splits are stable: an item's split depends only on its id (and the seed), never on what else is there.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import cifar10
from .errors import CnnCodesError
from .images import load_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
SPLITS = ("train", "validation", "test")
SPLIT_DTYPE = "<U10"  # wide enough for "validation": a narrower array would silently truncate it


@dataclass
class Dataset:
    name: str
    class_names: list[str]
    ids: list[str]  # stable identity of each item: relative path, or "cifar10/train/123"
    labels: np.ndarray  # int64
    splits: np.ndarray  # "train" / "validation" / "test"
    # (item index, min_side) -> (H, W, 3) uint8; min_side: the decoder may shrink a large image (JPEG draft mode)
    # as long as both sides stay at least this long; None: full size
    reader: Callable[[int, int | None], np.ndarray] = field(repr=False)
    content_key: str = ""  # what changes when the images change (see fingerprint())
    root: Path | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (item, reason) found while listing

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, i: int, min_side: int | None = None) -> np.ndarray:
        return self.reader(i, min_side)

    def path(self, i: int) -> Path | None:
        return self.root / self.ids[i] if self.root is not None else None

    def fingerprint(self) -> str:
        """Changes when any item, label or image content changes; used to name the codes cache."""
        h = hashlib.sha256(self.content_key.encode())
        h.update("\n".join(self.ids).encode("utf-8", "surrogateescape"))
        h.update(self.labels.astype(np.int64).tobytes())
        return h.hexdigest()[:20]

    def subset(self, index: Sequence[int] | np.ndarray) -> "Dataset":
        index = np.asarray(index, dtype=np.int64)
        return Dataset(
            name=self.name, class_names=self.class_names, ids=[self.ids[i] for i in index],
            labels=self.labels[index], splits=self.splits[index],
            reader=lambda j, min_side=None, _r=self.reader, _i=index: _r(int(_i[j]), min_side),
            content_key=self.content_key + f"|subset:{hashlib.sha1(index.tobytes()).hexdigest()}", root=self.root,
        )


def stable_fraction(item_id: str, seed) -> float:
    """A number in [0, 1) fixed by the item's id and the seed (or another key): the basis of every split."""
    digest = hashlib.sha1(f"{seed}:{item_id}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(ids: Sequence[str], test_percent: float, validation_percent: float, seed: int) -> np.ndarray:
    """test: test_percent of the items, by their id alone, so that no seed ever moves an image into or out of the
    test split; validation: validation_percent of the others, drawn with the seed; the rest is train."""
    test = np.array([stable_fraction(i, "test") < test_percent / 100 for i in ids], dtype=bool)
    validation = np.array([stable_fraction(i, seed) < validation_percent / 100 for i in ids], dtype=bool)
    out = np.full(len(ids), "train", dtype=object)
    out[validation & ~test] = "validation"
    out[test] = "test"
    return out.astype(SPLIT_DTYPE)


def _check_percents(test_percent: float, validation_percent: float) -> None:
    if not (0 <= test_percent < 100 and 0 <= validation_percent < 100):
        raise CnnCodesError(
            f"split percentages must be in [0, 100) (got test {test_percent}, validation {validation_percent})"
        )


def _regular_or_unreadable(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return True  # dangling link, loop, no permission: reported with its reason when read


def _scan_class_folders(root: Path, base: Path) -> tuple[list[str], list[str], list[int], list[tuple[str, str]]]:
    """Class names, file paths (relative to base) and labels under root/<class>/...; empty classes reported."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names, rel_paths, labels, problems = [], [], [], []
    for class_dir in class_dirs:
        files = []
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                if fn.startswith(".") or full.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if not _regular_or_unreadable(full):  # a FIFO named .jpg would block the reader forever
                    problems.append((full.relative_to(base).as_posix(), "not a regular file"))
                    continue
                files.append(full)
        if not files:
            problems.append((class_dir.relative_to(base).as_posix() + "/", "empty class folder: no image files, class ignored"))
            continue
        names.append(class_dir.name)
        for full in files:
            rel_paths.append(full.relative_to(base).as_posix())
            labels.append(len(names) - 1)
    return names, rel_paths, labels, problems


SPLIT_FOLDERS = {"train": "train", "val": "validation", "valid": "validation", "validation": "validation",
                 "test": "test"}  # folder name (any case) -> split


def _split_folders(root: Path) -> dict[str, Path]:
    """{split: folder} for a root laid out as train/ with val/ (valid/, validation/) and/or test/; {} for a single
    tree of class folders. Mixed or malformed layouts get a message that says what was expected."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {p: SPLIT_FOLDERS[p.name.lower()] for p in folders if p.name.lower() in SPLIT_FOLDERS}
    if not found:
        return {}
    others = [p.name for p in folders if p not in found]
    named = ", ".join(f"{p.name}/" for p in found)
    if others:
        raise CnnCodesError(f"{str(root)!r} holds split folders ({named}) beside other folders ({', '.join(others)}): "
                            "put the class folders inside each split folder, or rename a class folder named like a "
                            "split")
    by_split = {}
    for folder, split in found.items():
        if split in by_split:
            raise CnnCodesError(f"{str(root)!r} has two {split} folders ({by_split[split].name}/, {folder.name}/)")
        by_split[split] = folder
    if "train" not in by_split:
        raise CnnCodesError(f"{str(root)!r} has {named} but no train/ folder: expected train/<class>/<images>")
    for split, folder in by_split.items():
        inner = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if not any(p.is_dir() for p in inner):
            raise CnnCodesError(f"{folder.name}/ has no class folders: expected {folder.name}/<class name>/<images>")
        clash = [p.name for p in inner if p.is_dir() and p.name.lower() in SPLIT_FOLDERS]
        if clash:
            raise CnnCodesError(f"{folder.name}/ has a class folder named like a split ({clash[0]}/): rename the class "
                                f"or lay the data out as {folder.name}/<class name>/<images>")
    return by_split


def image_folder(root, test_percent: float = 20.0, validation_percent: float = 20.0, seed: int = 0) -> Dataset:
    """A folder of class folders, or train/ with val/ (valid/, validation/) and/or test/ split folders holding
    class folders. Splits without a folder are carved from train/: test by test_percent, by id alone;
    validation by validation_percent of the rest, seeded.
    """
    root = Path(root)
    if not root.exists():
        raise CnnCodesError(f"data path {str(root)!r} does not exist")
    if not root.is_dir():
        raise CnnCodesError(f"data path {str(root)!r} is not a folder of class folders (nor a CIFAR-10 archive)")
    _check_percents(test_percent, validation_percent)
    folders = _split_folders(root)
    if folders:
        names, ids, labels, problems = _scan_class_folders(folders["train"], root)
        carved = assign_splits(ids, 0.0 if "test" in folders else test_percent,
                               0.0 if "validation" in folders else validation_percent, seed)
        splits = [carved]
        for split in ("validation", "test"):
            if split not in folders:
                continue
            other_names, other_ids, other_labels, other_problems = _scan_class_folders(folders[split], root)
            missing = set(other_names) - set(names)
            if missing:
                raise CnnCodesError(f"{folders[split].name}/ has classes that train/ lacks: {sorted(missing)}")
            ids += other_ids
            labels += [names.index(other_names[t]) for t in other_labels]
            problems += other_problems
            splits.append(np.full(len(other_ids), split, dtype=SPLIT_DTYPE))
        splits = np.concatenate(splits)
    else:
        names, ids, labels, problems = _scan_class_folders(root, root)
        splits = assign_splits(ids, test_percent, validation_percent, seed)
    if not ids:
        raise CnnCodesError(f"no images found under {str(root)!r}: expected {root}/<class name>/<image files>")
    return _files_dataset(root, root.name, names, ids, labels, splits, problems)


def _files_dataset(root: Path, name: str, names: list[str], ids: list[str], labels: list[int], splits,
                   problems: list) -> Dataset:
    """Image files under root (ids are their relative paths), fingerprinted by their sizes and times."""
    if len(names) < 2:
        raise CnnCodesError(f"found only one class ({names[0]!r}) in {name!r}: a classifier needs at least two")
    stats = [os.stat(root / i, follow_symlinks=True) if (root / i).exists() else None for i in ids]
    content = hashlib.sha256("".join(f"{s.st_size}:{s.st_mtime_ns};" if s else "missing;" for s in stats).encode())
    return Dataset(
        name=name, class_names=names, ids=ids, labels=np.asarray(labels, dtype=np.int64), splits=np.asarray(splits),
        reader=lambda i, min_side=None: load_rgb(root / ids[i], min_side), content_key=f"folder:{content.hexdigest()}",
        root=root, problems=problems,
    )


def manifest(path, test_percent: float = 20.0, validation_percent: float = 20.0, seed: int = 0) -> Dataset:
    """A CSV with a header naming the columns path and label (and optionally split: train, val/validation, test):
    for labels that do not live in folder names. Paths are relative to the CSV's folder; rows without a split
    are carved as in a folder (test by id alone, validation seeded)."""
    import csv

    path = Path(path)
    _check_percents(test_percent, validation_percent)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CnnCodesError(f"cannot read the manifest {str(path)!r}: {exc}") from None
    columns = {c.strip().lower() for c in (rows[0].keys() if rows else [])}
    if not rows or not {"path", "label"} <= columns:
        raise CnnCodesError(f"{str(path)!r} is not a manifest: expected a CSV with a header row 'path,label[,split]' "
                            "and one row per image")
    rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in rows]
    problems = [(f"line {n + 2}", "no path or no label: row ignored") for n, r in enumerate(rows)
                if not r["path"] or not r["label"]]
    rows = [r for r in rows if r["path"] and r["label"]]
    names = sorted({r["label"] for r in rows})
    ids = [Path(r["path"]).as_posix() for r in rows]
    given = [SPLIT_FOLDERS.get(r.get("split", "").lower(), "") for r in rows]
    bad = sorted({r["split"] for r, g in zip(rows, given) if r.get("split") and not g})
    if bad:
        raise CnnCodesError(f"{str(path)!r}: unknown split {bad[0]!r}; use train, val (or validation) or test")
    carved = assign_splits(ids, 0.0 if "test" in given else test_percent,
                           0.0 if "validation" in given else validation_percent, seed)
    splits = np.array([g or c for g, c in zip(given, carved)], dtype=SPLIT_DTYPE)
    return _files_dataset(path.parent, path.stem, names, ids, [names.index(r["label"]) for r in rows], splits,
                          problems)


def from_arrays(images: np.ndarray, labels, class_names: list[str], splits, name: str = "arrays",
                id_prefix: str = "item") -> Dataset:
    """Images already in memory as (N, H, W, 3) uint8."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise CnnCodesError(f"expected images of shape (N, H, W, 3), got {images.shape}")
    splits = np.asarray(splits, dtype=object).astype(SPLIT_DTYPE)
    counters = {s: 0 for s in SPLITS}
    ids = []
    for s in splits:
        ids.append(f"{id_prefix}/{s}/{counters[s]}")
        counters[s] += 1
    return Dataset(
        name=name, class_names=list(class_names), ids=ids, labels=np.asarray(labels, dtype=np.int64), splits=splits,
        reader=lambda i, min_side=None: images[i], content_key="arrays:" + hashlib.sha256(images.tobytes()).hexdigest(),
    )


def cifar10_dataset(data=None, cache_dir=None, download: bool = True) -> Dataset:
    """The official CIFAR-10 archive (or its extracted folder) as a Dataset of train and test items."""
    images, labels, class_names, splits = cifar10.load(data, cache_dir=cache_dir, download=download)
    return from_arrays(images, labels, class_names, splits, name="cifar10", id_prefix="cifar10")


def carve_validation(ds: Dataset, validation_percent: float, seed: int) -> Dataset:
    """Re-draw the validation share of train+validation items (stable per id)."""
    pool = np.isin(ds.splits, ["train", "validation"])
    idx = np.flatnonzero(pool)
    ds.splits = ds.splits.astype(SPLIT_DTYPE)  # a copy, wide enough whatever the input's width
    ds.splits[idx] = assign_splits([ds.ids[i] for i in idx], 0.0, validation_percent, seed)
    return ds


def load_dataset(data=None, *, cache_dir=None, test_percent: float = 20.0, validation_percent: float = 20.0,
                 seed: int = 0, download: bool = True) -> Dataset:
    """The dataset behind a --data value: None means CIFAR-10 (downloaded if absent)."""
    if data is None or cifar10.looks_like_cifar(data):
        return carve_validation(cifar10_dataset(data, cache_dir=cache_dir, download=download), validation_percent, seed)
    if str(data).lower().endswith(".csv"):
        return manifest(data, test_percent, validation_percent, seed)
    return image_folder(data, test_percent, validation_percent, seed)
