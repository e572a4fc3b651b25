"""Turn a dataset into CNN codes: find or fill the codes store, one shard at a time."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from . import runtime
from .backbones import Backbone, get_backbone, load_model, split_names
from .codes import SHARD_SIZE, CodeStore, Codes, fingerprint
from .datasets import Dataset
from .errors import CnnCodesError
from .images import BadImage


def prepare(dataset: Dataset, i: int, backbone: Backbone):
    """Item i as a network input tensor, or the reason it cannot be used (string)."""
    try:
        return backbone.preprocess(dataset.read(i))
    except BadImage as exc:
        return str(exc)
    except OSError as exc:  # unreadable file, symlink loop, vanished file
        return f"cannot read: {exc.strerror or exc}"


def inference_model(backbone: str, device: str) -> torch.nn.Module:
    """The process's one instance of a backbone, on the device, in the channels_last layout forward() feeds it."""
    return load_model(backbone).to(device).to(memory_format=torch.channels_last)


def forward(model: torch.nn.Module, batch: torch.Tensor, device: str, precision: str) -> np.ndarray:
    """Codes of one batch; bf16 autocast and channels_last are what make the CPU fast (benchmarks/)."""
    batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16"):
        return model(batch).float().cpu().numpy()


def _local_batches(dataset: Dataset, indices: range, backbone: Backbone, model, settings: dict, bar) -> Iterable:
    """Decode the next batch in threads while the current one runs through the network."""
    size = settings["batch_size"]
    chunks = [indices[s:s + size] for s in range(0, len(indices), size)]
    with ThreadPoolExecutor(settings["threads"]) as pool:
        pending = [pool.map(lambda i: prepare(dataset, i, backbone), chunk) for chunk in chunks[:2]]
        for n, chunk in enumerate(chunks):
            items = list(pending.pop(0))
            if n + 2 < len(chunks):
                pending.append(pool.map(lambda i: prepare(dataset, i, backbone), chunks[n + 2]))
            good = [k for k, item in enumerate(items) if not isinstance(item, str)]
            codes = np.zeros((len(chunk), backbone.feature_dim), np.float32)
            if good:
                pinned = settings["device"] != "cpu"
                batch = torch.stack([items[k] for k in good])
                codes[good] = forward(model, batch.pin_memory() if pinned else batch, settings["device"], settings["precision"])
            bar.update(len(chunk))
            yield codes, {chunk[k]: item for k, item in enumerate(items) if isinstance(item, str)}


def compute_shard_local(dataset: Dataset, store: CodeStore, k: int, backbone: Backbone, settings: dict, bar) -> None:
    model = inference_model(backbone.name, settings["device"])
    r = store.shard_range(k)
    parts, skipped = [], {}
    for codes, bad in _local_batches(dataset, r, backbone, model, settings, bar):
        parts.append(codes)
        skipped.update(bad)
    ok = np.ones(len(r), bool)
    ok[[i - r.start for i in skipped]] = False
    store.write_shard(k, np.concatenate(parts), ok, skipped)


def store_for(dataset: Dataset, backbone: Backbone, precision: str, cache_dir: Path,
              shard_size: int = SHARD_SIZE) -> CodeStore:
    key = fingerprint(dataset=dataset.fingerprint(), backbone=backbone.name, weights=backbone.weights_id(),
                      preprocess=backbone.preprocess, precision=precision, shard_size=shard_size)
    flip = "-flip" if backbone.preprocess.flip else ""
    meta = {"dataset": dataset.name, "backbone": backbone.name, "preprocess": vars(backbone.preprocess),
            "precision": precision, "fingerprint": key}
    return CodeStore(Path(cache_dir) / "codes" / f"{dataset.name}-{backbone.name}{flip}-{key}", len(dataset),
                     backbone.feature_dim, meta, shard_size, backbone.code_dtype)


def extract_codes(dataset: Dataset, backbone: str = "efficientnet_lite0", *, cache_dir=None, batch_size: int = 64,
                  threads: int | None = None, device: str = "auto", precision: str = "auto", flip: bool = False,
                  engine: str = "local", address: str | None = None, concurrency: int | None = None,
                  shard_size: int = SHARD_SIZE, progress: bool = True) -> Codes:
    """Codes for every usable item of the dataset (reused from the cache when the inputs are unchanged).

    backbone may name several networks joined by '+': their codes are concatenated.
    """
    from tqdm import tqdm

    from .cifar10 import default_cache_dir

    names = split_names(backbone)
    if len(names) > 1:
        parts = [extract_codes(dataset, n, cache_dir=cache_dir, batch_size=batch_size, threads=threads, device=device,
                               precision=precision, flip=flip, engine=engine, address=address,
                               concurrency=concurrency, shard_size=shard_size, progress=progress) for n in names]
        out = parts[0]
        for p in parts[1:]:
            out = out.concat(p)
        return out
    if batch_size < 1:
        raise CnnCodesError(f"--batch-size must be at least 1 (got {batch_size})")
    if len(dataset) == 0:
        raise CnnCodesError("the dataset has no images")
    spec = get_backbone(names[0]).with_flip(flip)
    settings = {"batch_size": batch_size, "threads": threads or max(2, os.cpu_count() or 2),
                "device": runtime.resolve_device(device), "precision": runtime.resolve_precision(precision, device)}
    runtime.configure_threads()
    store = store_for(dataset, spec, settings["precision"], Path(cache_dir or default_cache_dir()), shard_size)
    done = store.read_all()
    missing = [k for k in range(store.n_shards) if k not in done]
    if missing:
        todo = sum(len(store.shard_range(k)) for k in missing)
        desc = f"codes {spec.name}{' (flipped)' if flip else ''}"
        with tqdm(total=todo, unit="img", desc=desc, disable=not progress, smoothing=0.05) as bar:
            if engine == "ray":
                from .engines import ray_engine

                ray_engine.compute_shards(dataset, store, missing, spec, settings, address, concurrency, bar)
            elif engine == "local":
                for k in missing:
                    compute_shard_local(dataset, store, k, spec, settings, bar)
            else:
                raise CnnCodesError(f"unknown engine {engine!r}; use local or ray")
    codes, ok, skipped = store.assemble(known=done)
    ids = np.array(dataset.ids)
    reasons = [(dataset.ids[i], why) for i, why in sorted(skipped.items())] + list(dataset.problems)
    return Codes(codes[ok], dataset.labels[ok], ids[ok], dataset.splits[ok], dataset.class_names, spec.name, reasons)
