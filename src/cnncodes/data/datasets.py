"""Where images and labels come from: a folder of class folders, the CIFAR-10 archive, or arrays.

Every dataset is a list of items (an id, a content key, a label, a split) plus a way to read item i as RGB.
Splits are stable: a file's split depends only on its content (and the seed), never on its name, its class folder
or what else is there, so relabelling, moving or adding images never moves another image between splits.
Images without a label (an unlabeled/ folder, manifest rows with an empty label) get label -1 and the split
"unlabeled": they get codes and predictions, and never train or score anything.
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
from ..errors import CnnCodesError
from .content import StatMemo, is_key, pixels_key
from .images import load_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
SPLITS = ("train", "validation", "test")
UNLABELED = "unlabeled"  # the split (and, any case, the folder name) of images without a label; their label is -1
UNLABELED_FOLDERS = {"unlabeled", "unlabelled"}
SPLIT_DTYPE = "<U10"  # wide enough for "validation": a narrower array would silently truncate it


@dataclass
class Dataset:
    name: str
    class_names: list[str]
    ids: list[str]  # each item's name: relative path, or "cifar10/train/123"
    labels: np.ndarray  # int64; -1: no label
    splits: np.ndarray  # "train" / "validation" / "test" / "unlabeled"
    # (item index, min_side) -> (H, W, 3) uint8; min_side: the decoder may shrink a large image (JPEG draft mode)
    # as long as both sides stay at least this long; None: full size
    reader: Callable[[int, int | None], np.ndarray] = field(repr=False)
    # each item's content key (data.content): what its codes are stored by; a reader that returns other pixels than
    # the file's (a transform) needs other keys
    keys: list[str] = field(default_factory=list)
    root: Path | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (item, reason) found while listing

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, i: int, min_side: int | None = None) -> np.ndarray:
        return self.reader(i, min_side)

    def path(self, i: int) -> Path | None:
        return self.root / self.ids[i] if self.root is not None else None

    def row_of(self) -> dict[str, int]:
        """{item id: its position}: how a table keyed by ids finds its items here."""
        return {item_id: n for n, item_id in enumerate(self.ids)}

    def split_sizes(self) -> dict[str, dict[str, int]]:
        """{split: {class name: images}} of the splits that have images."""
        out = {}
        for split in (*SPLITS, UNLABELED):
            mine = self.labels[self.splits == split]
            if len(mine):
                out[split] = {"(no label)": len(mine)} if split == UNLABELED else {
                    name: int((mine == k).sum()) for k, name in enumerate(self.class_names)}
        return out

    def subset(self, index: Sequence[int] | np.ndarray) -> "Dataset":
        index = np.asarray(index, dtype=np.int64)
        return Dataset(
            name=self.name, class_names=self.class_names, ids=[self.ids[i] for i in index],
            labels=self.labels[index], splits=self.splits[index],
            reader=lambda j, min_side=None, _r=self.reader, _i=index: _r(int(_i[j]), min_side),
            keys=[self.keys[i] for i in index], root=self.root,
        )


def stable_fraction(item_id: str, seed) -> float:
    """A number in [0, 1) fixed by the item's id and the seed (or another key): the basis of every split."""
    digest = hashlib.sha1(f"{seed}:{item_id}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(ids: Sequence[str], test_percent: float, validation_percent: float, seed: int) -> np.ndarray:
    """test: test_percent of the items, by their id (a file's content key) alone, so that no seed ever moves an
    image into or out of the test split; validation: validation_percent of the others, drawn with the seed; the rest
    is train. Identical images share a key, hence a split: a duplicate never sits in train and test at once."""
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


def _scan_class_folders(root: Path, base: Path) -> tuple[list[str], list[str], list[int], list[tuple[str, str]]]:
    """Class names, file paths (relative to base) and labels under root/<class>/...; empty classes reported."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_dirs.sort(key=lambda p: p.name.lower() in UNLABELED_FOLDERS)  # last: labels count the classes before it
    names, rel_paths, labels, problems = [], [], [], []
    for class_dir in class_dirs:
        files = _image_files(class_dir, base, problems)
        if class_dir.name.lower() in UNLABELED_FOLDERS:
            rel_paths += files
            labels += [-1] * len(files)
            continue
        if not files:
            problems.append((class_dir.relative_to(base).as_posix() + "/", "empty class folder: no image files, class ignored"))
            continue
        names.append(class_dir.name)
        rel_paths += files
        labels += [len(names) - 1] * len(files)
    return names, rel_paths, labels, problems


def _image_files(folder: Path, base: Path, problems: list) -> list[str]:
    """The image files under a folder as paths relative to base, in sorted order; non-regular ones (a FIFO named
    .jpg would block its reader forever) reported in problems. Strings and os.scandir, not pathlib: listing 60,000
    files is most of what an unchanged collection costs."""
    files = []
    prefix = len(os.fspath(base)) + 1

    def walk(directory: str) -> None:
        with os.scandir(directory) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                walk(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                rel = entry.path[prefix:].replace(os.sep, "/")
                # a link is listed whatever it points to: a dangling one is reported with its reason when keyed
                if entry.is_file(follow_symlinks=False) or entry.is_symlink() and not _special(entry.path):
                    files.append(rel)
                else:
                    problems.append((rel, "not a regular file"))

    walk(os.fspath(folder))
    return files


def _special(path: str) -> bool:
    """A link to something that exists and is not a regular file (a FIFO, a device, a folder)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


SPLIT_FOLDERS = {"train": "train", "val": "validation", "valid": "validation", "validation": "validation",
                 "test": "test"}  # folder name (any case) -> split


def _split_folders(root: Path) -> dict[str, Path]:
    """{split: folder} for a root laid out as train/ with val/ (valid/, validation/) and/or test/; {} for a single
    tree of class folders. Mixed or malformed layouts get a message that says what was expected."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {p: SPLIT_FOLDERS[p.name.lower()] for p in folders if p.name.lower() in SPLIT_FOLDERS}
    if not found:
        return {}
    others = [p.name for p in folders if p not in found and p.name.lower() not in UNLABELED_FOLDERS]
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


def image_folder(root, test_percent: float = 20.0, validation_percent: float = 20.0, seed: int = 0,
                 cache_dir=None) -> Dataset:
    """A folder of class folders, or train/ with val/ (valid/, validation/) and/or test/ split folders holding
    class folders; an unlabeled/ folder (any case) beside the class folders or the split folders holds images without
    a label. Splits without a folder are carved from train/: test by test_percent, by content alone; validation by
    validation_percent of the rest, seeded. cache_dir: where the stat memo of content keys lives.
    """
    root = Path(root)
    if not root.exists():
        raise CnnCodesError(f"data path {str(root)!r} does not exist")
    if not root.is_dir():
        raise CnnCodesError(f"data path {str(root)!r} is not a folder of class folders (nor a CIFAR-10 archive "
                            "nor a .csv manifest)")
    _check_percents(test_percent, validation_percent)
    folders = _split_folders(root)
    if folders:
        names, ids, labels, problems = _scan_class_folders(folders["train"], root)
        given = [""] * len(ids)
        for split in ("validation", "test"):
            if split not in folders:
                continue
            other_names, other_ids, other_labels, other_problems = _scan_class_folders(folders[split], root)
            missing = set(other_names) - set(names)
            if missing:
                raise CnnCodesError(f"{folders[split].name}/ has classes that train/ lacks: {sorted(missing)}")
            ids += other_ids
            labels += [names.index(other_names[t]) if t >= 0 else -1 for t in other_labels]
            problems += other_problems
            given += [split] * len(other_ids)
        for folder in root.iterdir():
            if folder.is_dir() and folder.name.lower() in UNLABELED_FOLDERS:
                found = _image_files(folder, root, problems)
                ids, labels, given = ids + found, labels + [-1] * len(found), given + [""] * len(found)
        carve = (0.0 if "test" in folders else test_percent, 0.0 if "validation" in folders else validation_percent)
    else:
        names, ids, labels, problems = _scan_class_folders(root, root)
        given, carve = [""] * len(ids), (test_percent, validation_percent)
        manifests = sorted(f.name for f in root.glob("*.csv"))
        if len(names) < 2 and manifests:
            raise CnnCodesError(f"{str(root)!r} holds {', '.join(manifests)} and {len(names)} class folder(s): to read "
                                f"a manifest, give its file: --data {root / manifests[0]}")
    if not ids:
        loose = [f.name for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        hint = (f" ({len(loose)} image files lie directly in it: put each class's images in a folder named after the "
                "class, or the unlabelled ones in unlabeled/)") if loose else ""
        raise CnnCodesError(f"no images found under {str(root)!r}: expected {root}/<class name>/<image files>{hint}")
    return _files_dataset(root, root.name, names, ids, labels, given, carve, seed, problems, cache_dir)


def unlabelled_files(root, ids: list[str], cache_dir=None) -> Dataset:
    """Image files under root (ids: their relative paths) without labels yet: the labelling tool's collection."""
    root = Path(root)
    return _files_dataset(root, root.name, [], ids, [-1] * len(ids), [""] * len(ids), (0.0, 0.0), 0, [], cache_dir,
                          classes_needed=False)


def _files_dataset(root: Path, name: str, names: list[str], ids: list[str], labels: list[int], given: list[str],
                   carve: tuple[float, float], seed: int, problems: list, cache_dir,
                   classes_needed: bool = True) -> Dataset:
    """Image files under root (ids are their relative paths) with their content keys; a file that cannot be read
    is reported in problems and left out. given: each file's split ("" where it is carved by its content key)."""
    if classes_needed and len(names) < 2:
        raise CnnCodesError(f"found {'only one class (' + repr(names[0]) + ')' if names else 'no class'} in "
                            f"{name!r}: a classifier needs at least two")
    memo = StatMemo(Path(cache_dir or cifar10.default_cache_dir()) / "files.sqlite")
    found = memo.keys([os.path.join(root, i) for i in ids])
    keep = [n for n, key in enumerate(found) if is_key(key)]
    lost = [(ids[n], key) for n, key in enumerate(found) if not is_key(key)]
    if not keep:
        missing = sum(why.startswith("missing") for _, why in lost)
        raise CnnCodesError(f"none of the {len(ids):,} images under {str(root)!r} can be read ({missing:,} missing, "
                            f"e.g. {lost[0][0]!r} resolved to {str(root / lost[0][0])!r}: {lost[0][1]})")
    ids, keys = [ids[n] for n in keep], [found[n] for n in keep]
    labels = np.asarray(labels, dtype=np.int64)[keep]
    given = [given[n] for n in keep]
    carved = assign_splits(keys, *carve, seed)
    splits = np.array([UNLABELED if y < 0 else g or c for g, c, y in zip(given, carved, labels)], dtype=SPLIT_DTYPE)
    return Dataset(
        name=name, class_names=names, ids=ids, labels=labels, splits=splits,
        reader=lambda i, min_side=None: load_rgb(root / ids[i], min_side), keys=keys, root=root,
        problems=problems + lost,
    )


def manifest(path, test_percent: float = 20.0, validation_percent: float = 20.0, seed: int = 0,
             cache_dir=None) -> Dataset:
    """A CSV with a header naming the columns path and label (and optionally split: train, val/validation, test):
    for labels that do not live in folder names. Paths are relative to the CSV's folder (or absolute) and must lie
    in it or below it; an empty label marks an image without a label; rows without a split are carved as in a
    folder."""
    import csv

    path = Path(path)
    _check_percents(test_percent, validation_percent)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CnnCodesError(f"cannot read the manifest {str(path)!r}: {exc}") from None
    header = [c.strip() for c in (rows[0].keys() if rows else []) if c is not None]
    if not rows or not {"path", "label"} <= {c.lower() for c in header}:
        found = f"its header row is {','.join(header)!r}" if rows else "it holds no row of an image"
        raise CnnCodesError(f"{str(path)!r} is not a manifest: expected a CSV with a header row 'path,label[,split]' "
                            f"and one row per image; {found}")
    rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in rows]
    problems = [(f"line {n + 2}", "no path: row ignored") for n, r in enumerate(rows) if not r["path"]]
    rows = [r for r in rows if r["path"]]
    ids = [manifest_id(path, r["path"]) for r in rows]
    seen = {}
    for i, r in zip(ids, rows):
        if i in seen and bool(seen[i]) != bool(r["label"]):
            raise CnnCodesError(f"{str(path)!r} lists {i!r} both with a label ({seen[i] or r['label']!r}) and without "
                                "one: keep one row per image")
        seen.setdefault(i, r["label"])
    names = sorted({r["label"] for r in rows if r["label"]})
    given = [SPLIT_FOLDERS.get(r.get("split", "").lower(), "") for r in rows]
    bad = sorted({r["split"] for r, g in zip(rows, given) if r.get("split") and not g})
    if bad:
        raise CnnCodesError(f"{str(path)!r}: unknown split {bad[0]!r}; use train, val (or validation) or test")
    carve = (0.0 if "test" in given else test_percent, 0.0 if "validation" in given else validation_percent)
    labels = [names.index(r["label"]) if r["label"] else -1 for r in rows]
    return _files_dataset(path.parent, path.stem, names, ids, labels, given, carve, seed, problems, cache_dir)


def manifest_id(manifest_path: Path, listed: str) -> str:
    """A manifest's path as the image's id: relative to the manifest's folder, where an absolute path is turned
    into one (normalised as text: a symbolic link's '..' is not followed); a path outside that folder, even after
    resolving symbolic links, is refused (a collection's images live below its manifest, as below a folder: the id
    is what the codes store, the report and the labelling tool know an image by)."""
    folder = os.path.abspath(manifest_path.parent)
    full = os.path.normpath(os.path.join(folder, listed))  # (an absolute path stays itself)
    if os.path.commonpath([folder, full]) != folder:  # the same place spelled through a link?
        folder, full = os.path.realpath(folder), os.path.realpath(full)
        if os.path.commonpath([folder, full]) != folder:
            raise CnnCodesError(f"{str(manifest_path)!r}: the path {listed!r} is outside the manifest's folder "
                                f"{folder!r}; list images that lie in that folder or below it (relative paths are "
                                "read from it), or move the manifest up to a folder that holds all its images")
    return Path(os.path.relpath(full, folder)).as_posix()


def from_arrays(images: np.ndarray, labels, class_names: list[str], splits, name: str = "arrays",
                id_prefix: str = "item") -> Dataset:
    """Images already in memory as (N, H, W, 3) uint8; ids name each item's split and position in it."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise CnnCodesError(f"expected images of shape (N, H, W, 3), got {images.shape}")
    splits = np.asarray(splits, dtype=object).astype(SPLIT_DTYPE)
    counters = {s: 0 for s in (*SPLITS, UNLABELED)}
    ids = []
    for s in splits:
        ids.append(f"{id_prefix}/{s}/{counters[s]}")
        counters[s] += 1
    return Dataset(
        name=name, class_names=list(class_names), ids=ids, labels=np.asarray(labels, dtype=np.int64), splits=splits,
        reader=lambda i, min_side=None: images[i], keys=[pixels_key(x) for x in images],
    )


def cifar10_dataset(data=None, cache_dir=None, download: bool = True) -> Dataset:
    """The official CIFAR-10 archive (or its extracted folder) as a Dataset of train and test items."""
    images, labels, class_names, splits = cifar10.load(data, cache_dir=cache_dir, download=download)
    return from_arrays(images, labels, class_names, splits, name="cifar10", id_prefix="cifar10")


def carve_validation(ds: Dataset, validation_percent: float, seed: int) -> Dataset:
    """Re-draw the validation share of train+validation items (stable per id: the archive's ids never change)."""
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
        return manifest(data, test_percent, validation_percent, seed, cache_dir)
    return image_folder(data, test_percent, validation_percent, seed, cache_dir)
