"""Turn a dataset into CNN codes: find the codes store, have an engine fill its missing shards, read it back."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import runtime as process
from .backbones import DEFAULT_BACKBONE, Backbone, backbone_names, get_backbone
from .codes import SHARD_SIZE, CodeStore, Codes, fingerprint
from .datasets import Dataset, load_dataset
from .engines import get_engine
from .errors import CnnCodesError
from .inference import prepare
from .onnx_graphs import CALIBRATION_IMAGES, check_runtime, codes_graph


def store_for(dataset: Dataset, backbone: Backbone, precision: str, cache_dir: Path,
              shard_size: int = SHARD_SIZE, runtime: str = "torch") -> CodeStore:
    """precision: what the torch runtime computes in; the onnx runtimes carry theirs in the graph."""
    if runtime != "torch":
        precision = runtime  # the graph decides the numbers (int8 also by its calibration, which is of this dataset)
    key = fingerprint(dataset=dataset.fingerprint(), backbone=backbone.name, weights=backbone.weights_id(),
                      preprocess=backbone.preprocess, precision=precision, shard_size=shard_size,
                      **({"decode": "jpeg-draft"} if dataset.root is not None else {}))
    flip = "-flip" if backbone.preprocess.flip else ""
    meta = {"dataset": dataset.name, "backbone": backbone.name, "preprocess": vars(backbone.preprocess),
            "precision": precision, "fingerprint": key}
    return CodeStore(Path(cache_dir) / "codes" / f"{dataset.name}-{backbone.name}{flip}-{key}", len(dataset),
                     backbone.feature_dim, meta, shard_size, backbone.code_dtype)


def extract_codes(dataset: Dataset, backbone: str = DEFAULT_BACKBONE, *, cache_dir=None, batch_size: int = 64,
                  threads: int | None = None, device: str = "auto", precision: str = "auto", flip: bool = False,
                  engine: str = "local", address: str | None = None, concurrency: int | None = None,
                  shard_size: int = SHARD_SIZE, runtime: str = "torch", progress: bool = True) -> Codes:
    """Codes for every usable item of the dataset (reused from the cache when the inputs are unchanged).

    backbone may name several networks joined by '+': their codes are concatenated.
    runtime: torch, onnx (ONNX Runtime, fp32) or onnx-int8 (calibrated on this dataset's training images).
    """
    from tqdm import tqdm

    from .cifar10 import default_cache_dir

    names = backbone_names(backbone)
    if len(names) > 1:
        parts = [extract_codes(dataset, n, cache_dir=cache_dir, batch_size=batch_size, threads=threads, device=device,
                               precision=precision, flip=flip, engine=engine, address=address,
                               concurrency=concurrency, shard_size=shard_size, runtime=runtime, progress=progress)
                 for n in names]
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
    store = store_for(dataset, spec, settings["precision"], cache, shard_size, runtime)
    done = store.read_all()
    missing = [k for k in range(store.n_shards) if k not in done]
    if missing:
        compute_shards = get_engine(engine)
        settings["graph"] = codes_graph(spec.with_flip(False), runtime, cache, Calibration(dataset, spec))
        todo = sum(len(store.shard_range(k)) for k in missing)
        desc = f"codes {spec.name}{' (flipped)' if flip else ''}"
        with tqdm(total=todo, unit="img", desc=desc, disable=not progress, smoothing=0.05) as bar:
            compute_shards(dataset, store, missing, spec, settings, bar)
    codes, ok, skipped = store.assemble(known=done)
    ids = np.array(dataset.ids)
    reasons = [(dataset.ids[i], why) for i, why in sorted(skipped.items())] + list(dataset.problems)
    usable = codes if ok.all() else codes.select(ok)  # still on disk: rows are read when a step asks for them
    return Codes(usable, dataset.labels[ok], ids[ok], dataset.splits[ok], dataset.class_names, spec.name, reasons)


class Calibration:
    """The images an int8 graph takes its activation ranges from: a seeded sample of the dataset's training split,
    preprocessed as for extraction (unmirrored), in batches."""

    def __init__(self, dataset: Dataset, spec: Backbone, n: int = CALIBRATION_IMAGES, batch: int = 32):
        train = np.flatnonzero(dataset.splits == "train")
        rows = train if len(train) else np.arange(len(dataset))
        self.rows = np.sort(np.random.default_rng(0).choice(rows, min(n, len(rows)), replace=False))
        self.dataset, self.spec, self.batch = dataset, spec.with_flip(False), batch
        self.identity = f"{dataset.fingerprint()}:{self.rows.tolist()}"

    def __call__(self):
        for start in range(0, len(self.rows), self.batch):
            items = [prepare(self.dataset.read, int(i), self.spec) for i in self.rows[start:start + self.batch]]
            good = [x for x in items if not isinstance(x, str)]
            if good:
                yield self.spec.preprocess.network_input(np.stack(good))


def codes_graphs(settings) -> dict:
    """The ONNX graphs that computed a run's codes (none for the torch runtime): prediction must compute the same.
    The int8 graph is the one calibrated on the run's training images, rebuilt from its data where not cached."""
    from .cifar10 import default_cache_dir

    if settings.runtime == "torch":
        return {}
    cache = Path(settings.cache_dir or default_cache_dir())
    dataset = load_dataset(settings.data, **settings.dataset_options()) if settings.runtime == "onnx-int8" else None
    graphs = {}
    for name in backbone_names(settings.backbone):
        spec = get_backbone(name)
        calibration = Calibration(dataset, spec) if dataset is not None else None
        graphs[name] = codes_graph(spec, settings.runtime, cache, calibration)
    return graphs
