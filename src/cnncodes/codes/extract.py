"""Turn a dataset into CNN codes: open the store of the extraction identity, have an engine compute the images
whose content it lacks, and return the dataset's view of it."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import runtime as process
from ..backbones import DEFAULT_BACKBONE, Backbone, backbone_names, get_backbone
from .identity import extraction_identity
from .store import MISSING, SKIPPED, CodeStore, open_store
from .view import Codes
from ..data.datasets import Dataset
from .engines import get_engine
from ..errors import CnnCodesError
from .inference import prepare
from .onnx_graphs import CALIBRATION_IMAGES, check_runtime, codes_graph


def extract_codes(dataset: Dataset, backbone: str = DEFAULT_BACKBONE, *, cache_dir=None, batch_size: int = 64,
                  threads: int | None = None, device: str = "auto", precision: str = "auto", flip: bool = False,
                  engine: str = "local", address: str | None = None, concurrency: int | None = None,
                  runtime: str = "torch", graphs: dict | None = None, progress: bool = True) -> Codes:
    """Codes for every usable item of the dataset: taken from the store where it holds the item's content, computed
    (and stored) where not.

    backbone may name several networks joined by '+': their codes are concatenated.
    runtime: torch, onnx (ONNX Runtime, fp32) or onnx-int8 (calibrated on training images of this dataset, or the
    graph in `graphs`: {backbone name: graph file}, what a saved model used).
    """
    names = backbone_names(backbone)
    if len(names) > 1:
        options = dict(cache_dir=cache_dir, batch_size=batch_size, threads=threads, device=device, precision=precision,
                       flip=flip, engine=engine, address=address, concurrency=concurrency, runtime=runtime,
                       graphs=graphs, progress=progress)
        parts = [extract_codes(dataset, n, **options) for n in names]
        out = parts[0]
        for p in parts[1:]:
            out = out.concat(p)
        return out
    if batch_size < 1:
        raise CnnCodesError(f"--batch-size must be at least 1 (got {batch_size})")
    if len(dataset) == 0:
        raise CnnCodesError("the dataset has no images")
    spec = get_backbone(names[0]).with_flip(flip)
    device = process.resolve_device(device, check_runtime(runtime))
    settings = {"batch_size": batch_size, "threads": threads or max(2, process.cpu_count()), "device": device,
                "precision": process.resolve_precision(precision, device), "address": address,
                "concurrency": concurrency, "runtime": runtime}
    if runtime == "torch":
        process.configure_threads()
    cache = Path(cache_dir or default_cache_dir())
    graph = (graphs or {}).get(spec.name) or codes_graph(
        spec.with_flip(False), runtime, cache, Calibration(dataset, spec) if runtime == "onnx-int8" else None)
    settings["graph"] = graph
    store = open_store(cache, extraction_identity(spec, runtime, settings["precision"], graph))
    if progress and store.committed_rows() == 0 and (cache / "codes").is_dir():
        print(f"cnncodes: codes stores of an older format in {cache / 'codes'} are not read any more; codes are "
              "computed once into the new store (`cnncodes cache prune --yes` removes the old ones)", file=sys.stderr)
    rows, reasons = _lookup_intact(store, dataset.keys)
    todo = _first_of_each(dataset.keys, rows == MISSING)
    unstored = {}
    if todo:
        from tqdm import tqdm

        desc = f"codes {spec.name}{' (flipped)' if flip else ''}"
        with tqdm(total=len(todo), unit="img", desc=desc, disable=not progress, smoothing=0.05) as bar:
            unstored = get_engine(engine)(dataset, store, todo, spec, settings, bar)
        rows, reasons, _ = store.lookup(dataset.keys)
    ok = rows >= 0
    ids = np.array(dataset.ids)
    skipped = [(dataset.ids[i], reasons.get(dataset.keys[i]) or unstored.get(dataset.keys[i], "not computed"))
               for i in np.flatnonzero(~ok)]
    return Codes(store.matrix(rows[ok]), dataset.labels[ok], ids[ok], dataset.splits[ok], dataset.class_names,
                 spec.name, skipped + list(dataset.problems))


def default_cache_dir() -> Path:
    from ..data.cifar10 import default_cache_dir as cache

    return cache()


def _lookup_intact(store: CodeStore, keys: list[str]) -> tuple[np.ndarray, dict]:
    """The store's rows for these keys, after dropping any row whose bytes no longer match their checksum."""
    rows, reasons, crcs = store.lookup(keys)
    found = rows >= 0
    damaged = store.damaged(rows[found], crcs[found])
    if len(damaged):
        store.forget(damaged)
        rows, reasons, _ = store.lookup(keys)
    return rows, reasons


def _first_of_each(keys: list[str], wanted: np.ndarray) -> list[int]:
    """Positions of the wanted items, one per distinct content key (the same image twice is computed once)."""
    seen, out = set(), []
    for i in np.flatnonzero(wanted):
        if keys[i] not in seen:
            seen.add(keys[i])
            out.append(int(i))
    return out


class Calibration:
    """The images an int8 graph takes its activation ranges from: the training images with the smallest content
    keys (keys are hashes, so a random sample that adding or relabelling a few images barely changes), preprocessed
    as for extraction (unmirrored), in batches."""

    def __init__(self, dataset: Dataset, spec: Backbone, n: int = CALIBRATION_IMAGES, batch: int = 32):
        train = np.flatnonzero(dataset.splits == "train")
        first = {}
        for i in (train if len(train) else range(len(dataset))):
            first.setdefault(dataset.keys[i], int(i))
        self.keys = sorted(first)[:n]
        self.rows = [first[k] for k in self.keys]
        self.dataset, self.spec, self.batch = dataset, spec.with_flip(False), batch

    def __call__(self):
        for start in range(0, len(self.rows), self.batch):
            items = [prepare(self.dataset.read, i, self.spec) for i in self.rows[start:start + self.batch]]
            good = [x for x in items if not isinstance(x, str)]
            if good:
                yield self.spec.preprocess.network_input(np.stack(good))


def codes_graphs(settings, dataset: Dataset | None = None) -> dict:
    """{backbone: ONNX graph} that compute a run's codes (none for the torch runtime). An int8 graph is calibrated on
    the dataset's training images (loaded from the settings where not given) unless the cache holds one already."""
    if settings.runtime == "torch":
        return {}
    cache = Path(settings.cache_dir or default_cache_dir())
    if dataset is None and settings.runtime == "onnx-int8":
        dataset = settings.load_data()
    return {name: codes_graph(get_backbone(name), settings.runtime, cache,
                              Calibration(dataset, get_backbone(name)) if dataset is not None else None)
            for name in backbone_names(settings.backbone)}
