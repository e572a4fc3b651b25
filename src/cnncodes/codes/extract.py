"""Turn a dataset into CNN codes: open the store of the extraction identity, have an engine compute the images
whose content it lacks, and return the dataset's view of it."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import runtime as process
from ..backbones import DEFAULT_BACKBONE, Backbone, backbone_names, get_backbone
from .identity import extraction_identity
from .store import MISSING, CodeStore, open_store
from .view import Codes
from ..data.datasets import Dataset
from .engines import get_engine
from ..errors import CnnCodesError
from .inference import prepare
from .onnx_graphs import CALIBRATION_IMAGES, check_runtime, codes_graph


@dataclass(frozen=True)
class Extraction:
    """How an extraction runs, resolved once from the caller's options (auto device and precision decided, threads
    counted): what the engines receive."""
    batch_size: int
    threads: int
    device: str
    precision: str  # what torch computes in; the onnx runtimes' graph decides their numbers
    runtime: str
    graph: Path | None  # the ONNX graph of an onnx runtime
    address: str | None = None  # Ray
    concurrency: int | None = None  # Ray actors


def extract_codes(dataset: Dataset, backbone: str = DEFAULT_BACKBONE, *, cache_dir=None, batch_size: int = 64,
                  threads: int | None = None, device: str = "auto", precision: str = "auto", flip: bool = False,
                  engine: str = "local", address: str | None = None, concurrency: int | None = None,
                  runtime: str = "auto", graphs: dict | None = None, progress: bool = True) -> Codes:
    """Codes for every usable item of the dataset: taken from the store where it holds the item's content, computed
    (and stored) where not.

    backbone may name several networks joined by '+': their codes are concatenated.
    runtime: torch, onnx (ONNX Runtime, fp32) or onnx-int8 (calibrated on training images of this dataset, or the
    graph in `graphs`: {backbone name: graph file}, what a saved model used); auto: process.resolve_runtime.
    """
    runtime = process.resolve_runtime(runtime, device, precision)
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
    if len(dataset.keys) != len(dataset):
        raise CnnCodesError(f"the dataset has {len(dataset):,} items but {len(dataset.keys):,} content keys: a Dataset "
                            "made by hand needs keys (cnncodes.data.content.pixels_key or file_key) for its items")
    spec = get_backbone(names[0]).with_flip(flip)
    device = process.resolve_device(device, check_runtime(runtime))
    if runtime == "torch":
        process.configure_threads()
    cache = Path(cache_dir or default_cache_dir())
    graph = (graphs or {}).get(spec.name) or codes_graph(
        spec.with_flip(False), runtime, cache, Calibration(dataset, spec) if runtime == "onnx-int8" else None)
    settings = Extraction(batch_size=batch_size, threads=threads or max(2, process.cpu_count()), device=device,
                          precision=process.resolve_precision(precision, device), runtime=runtime, graph=graph,
                          address=address, concurrency=concurrency)
    store = open_store(cache, extraction_identity(spec, runtime, settings.precision, graph, device))
    if progress and store.committed_rows() == 0 and (cache / "codes").is_dir():
        print(f"cnncodes: codes stores of an older format in {cache / 'codes'} are not read any more; codes are "
              "computed once into the new store (`cnncodes cache prune --yes` removes the old ones)", file=sys.stderr)
    rows, reasons = _lookup_intact(store, dataset.keys)
    todo = _first_of_each(dataset.keys, rows == MISSING)
    unstored = {}
    if todo:
        from tqdm import tqdm

        desc = f"codes {spec.name}{' (flipped)' if flip else ''}"
        with tqdm(total=len(todo), unit="img", desc=desc, disable=None if progress else True, smoothing=0.05) as bar:
            unstored = get_engine(engine)(dataset, store, todo, spec, settings, bar)
        rows, reasons, _ = store.lookup(dataset.keys)
    ok = rows >= 0
    ids = np.array(dataset.ids)
    skipped = [(dataset.ids[i], reasons.get(dataset.keys[i]) or unstored.get(dataset.keys[i], "not computed"))
               for i in np.flatnonzero(~ok)]
    return Codes(store.matrix(rows[ok]), dataset.labels[ok], ids[ok], dataset.splits[ok], dataset.class_names,
                 spec.name, skipped + list(dataset.problems))


def image_codes(backbone: str, images: Sequence, flip: bool = False, device: str = "auto", precision: str = "auto",
                batch_size: int = 64, graphs: dict | None = None, cores: int | None = None):
    """Codes of individual images (arrays or paths). Returns (codes of the usable images, {position: reason}).
    graphs: {backbone name: ONNX graph} for codes computed by ONNX Runtime (see codes_graphs); cores: how many
    the work may use (default: all this process may use; see inference.encode)."""
    device = process.resolve_device(device, "onnx" if graphs else "torch")
    precision = process.resolve_precision(precision, device)

    from ..data.images import item_reader
    from .inference import encode, inference_model

    read = item_reader(images)
    parts, problems = [], {}
    for name in backbone_names(backbone):
        spec = get_backbone(name).with_flip(flip)
        rows = np.zeros((len(images), spec.feature_dim), np.float32)
        model = inference_model(name, device, (graphs or {}).get(name))
        for chunk, codes, bad in encode(read, range(len(images)), spec, model, device=device,
                                        precision=precision, batch_size=batch_size,
                                        threads=cores or process.cpu_count()):
            rows[chunk.start:chunk.stop] = codes
            problems.update(bad)
        parts.append(rows)
    usable = [i for i in range(len(images)) if i not in problems]
    return np.hstack(parts)[usable], problems


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
    as for extraction (unmirrored), in batches: small ones, since ONNX Runtime's calibration holds every activation
    of a batch (batches of 32 Lite0 windows took 3 GiB more than extraction, benchmarks/memory.py), and the ranges are
    the minimum and maximum over all batches whatever their size."""

    def __init__(self, dataset: Dataset, spec: Backbone, n: int = CALIBRATION_IMAGES, batch: int = 4):
        train = np.flatnonzero(dataset.splits == "train")
        first = {}
        for i in (train if len(train) else range(len(dataset))):
            first.setdefault(dataset.keys[i], int(i))
        self.keys = sorted(first)[:n]
        self.collection = frozenset(dataset.keys)  # what decides whether a cached graph still fits (codes_graph)
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
    settings = settings.resolved()
    if settings.runtime == "torch":
        return {}
    cache = Path(settings.cache_dir or default_cache_dir())
    if dataset is None and settings.runtime == "onnx-int8":
        dataset = settings.load_data()
    return {name: codes_graph(get_backbone(name), settings.runtime, cache,
                              Calibration(dataset, get_backbone(name)) if dataset is not None else None)
            for name in backbone_names(settings.backbone)}
