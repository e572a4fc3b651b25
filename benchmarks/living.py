"""A living collection: what each edit costs in the codes step (seconds, images computed, cache growth).

    python benchmarks/living.py --folder ../shared/data/cifar10-exact     # a copy of a 5,000-image folder
    python benchmarks/living.py --cifar ../shared/data/cifar-10-python.tar.gz   # the official 60,000 images
    python benchmarks/living.py --folder ../shared/data/cifar10-exact --runtime onnx-int8 --added 2000   # int8 graph


Folder: the images are copied into a temporary train/ + test/ tree (so that moving between splits is moving a file),
100 of them (--added) held back to be added later. Each step edits the copy as a user would (move a file to another class
folder, copy files in, delete, move from train/ to test/), then times loading the collection and extract_codes.
Archive: the same edits on the in-memory dataset (the archive is one file): labels, splits and items change.
Goals: images computed = images added; every other edit within 2 s of the unchanged rerun; the cache grows by the
codes of the added images only; codes of unchanged images bit-identical.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes import extract_codes, image_folder  # noqa: E402
from cnncodes.codes.cache import cache_entries  # noqa: E402
from cnncodes.data.datasets import carve_validation, cifar10_dataset  # noqa: E402


def stored(cache: Path) -> tuple[int, int]:
    """(images in the cache's codes stores, bytes of the stores)."""
    stores = [e for e in cache_entries(cache) if e.kind == "codes store"]
    return sum(e.images for e in stores), sum(e.bytes for e in stores)


def measure(name: str, load, cache: Path, options: dict, rows: list, reference: dict) -> None:
    before, _ = stored(cache)
    t0 = time.perf_counter()
    dataset = load()
    codes = extract_codes(dataset, cache_dir=cache, progress=False, **options)
    seconds = time.perf_counter() - t0
    after, size = stored(cache)
    key_of = dict(zip(dataset.ids, dataset.keys))
    keys = [key_of[i] for i in codes.ids.tolist()]  # codes of the same image content, whatever its name now
    if not reference:
        reference.update(zip(keys, np.asarray(codes.vectors)))
    row = dict(zip(keys, range(len(keys))))
    same = [k for k in reference if k in row]
    identical = bool(np.array_equal(codes.vectors[[row[k] for k in same]], np.stack([reference[k] for k in same])))
    rows.append({"step": name, "seconds": round(seconds, 2), "computed": after - before, "images": len(codes.ids),
                 "cache_mb": round(size / 2**20, 1), "unchanged_codes_identical": identical})
    print(f"{name:<32} {seconds:8.2f} s  computed {after - before:>6,}  images {len(codes.ids):>6,}  "
          f"cache {size / 2**20:8.1f} MiB  identical {identical}", flush=True)


def folder_steps(source: Path, work: Path, cache: Path, options: dict, added: int = 100) -> list:
    files = sorted(p for p in source.rglob("*.png"))
    data, spare = work / "data", work / "spare"
    held = set(files[::max(1, len(files) // added)][:added])
    for f in files:  # every image under train/<class>/ or test/<class>/ as in the source; `added` held back
        rel = f.relative_to(source)
        split = rel.parts[0] if rel.parts[0] in ("train", "test") else "train"
        target = (spare if f in held else data) / split / rel.parts[-2] / rel.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    load = lambda: image_folder(data, cache_dir=cache)  # noqa: E731
    train = sorted((data / "train").rglob("*.png"))
    classes = sorted(p.name for p in (data / "train").iterdir())
    rows, reference = [], {}

    def relabel(n):
        """Move n files, spread over the classes (no class folder empties), into the next class folder."""
        for k in range(0, len(train), len(train) // n)[:n]:
            f = train[k]
            train[k] = data / "train" / classes[(classes.index(f.parent.name) + 1) % len(classes)] / f.name
            f.rename(train[k])

    measure("first run", load, cache, options, rows, reference)
    measure("unchanged rerun", load, cache, options, rows, reference)
    relabel(1)
    measure("1 label changed", load, cache, options, rows, reference)
    relabel(1000)
    measure("1,000 labels changed", load, cache, options, rows, reference)
    for f in sorted(spare.rglob("*.png")):
        target = data / f.relative_to(spare)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    measure(f"{len(held):,} images added", load, cache, options, rows, reference)
    for f in train[-100:]:
        f.unlink()
    measure("100 images deleted", load, cache, options, rows, reference)
    for f in train[-300:-200]:
        target = data / "test" / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        f.rename(target)
    measure("100 moved from train to test", load, cache, options, rows, reference)
    return rows


def cifar_steps(archive: Path, cache: Path, options: dict) -> list:
    full = carve_validation(cifar10_dataset(archive, cache_dir=cache), 20.0, 0)
    n = len(full)
    rng = np.random.default_rng(0)
    added = rng.choice(n, 100, replace=False)
    state = {"items": np.setdiff1d(np.arange(n), added), "labels": full.labels.copy(), "splits": full.splits.copy()}

    def load():
        ds = full.subset(state["items"])
        ds.labels, ds.splits = state["labels"][state["items"]], state["splits"][state["items"]]
        return ds

    rows, reference = [], {}
    measure("first run", load, cache, options, rows, reference)
    measure("unchanged rerun", load, cache, options, rows, reference)
    for count, name in ((1, "1 label changed"), (1000, "1,000 labels changed")):
        pick = rng.choice(state["items"], count, replace=False)
        state["labels"][pick] = (state["labels"][pick] + 1) % 10
        measure(name, load, cache, options, rows, reference)
    state["items"] = np.arange(n)
    measure("100 images added", load, cache, options, rows, reference)
    state["items"] = np.setdiff1d(state["items"], rng.choice(n, 100, replace=False))
    measure("100 images deleted", load, cache, options, rows, reference)
    moved = rng.choice(np.flatnonzero(state["splits"] == "train"), 100, replace=False)
    state["splits"][moved] = "test"
    measure("100 moved from train to test", load, cache, options, rows, reference)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", help="a folder of images (train/ and test/ class folders, or one tree)")
    ap.add_argument("--cifar", help="the official CIFAR-10 archive")
    ap.add_argument("--runtime", default="torch")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--added", type=int, default=100, help="--folder: images held back, then added (default 100)")
    ap.add_argument("--json", help="write the table here too")
    ap.add_argument("--cache", help="the codes cache to start from (default: an empty temporary one); it must not "
                                    "hold these images' codes yet")
    a = ap.parse_args()
    if not (a.folder or a.cifar):
        ap.error("give --folder or --cifar")
    options = {"runtime": a.runtime, "backbone": a.backbone}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = Path(a.cache) if a.cache else tmp / "cache"
        rows = folder_steps(Path(a.folder), tmp, cache, options, a.added) if a.folder else \
            cifar_steps(Path(a.cifar), cache, options)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory {peak:.2f} GiB")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "peak_gib": round(peak, 2), "options": options}, indent=1))


if __name__ == "__main__":
    main()
