"""The local engine: this process's threads decode, its one model instance runs, one shard at a time."""
from __future__ import annotations

import numpy as np

from ..inference import encode, inference_model


def compute_shards(dataset, store, shards: list[int], spec, settings: dict, bar) -> None:
    model = inference_model(spec.name, settings["device"], settings.get("graph"))
    for k in shards:
        r = store.shard_range(k)
        parts, skipped = [], {}
        for chunk, codes, bad in encode(dataset.read, r, spec, model, device=settings["device"],
                                        precision=settings["precision"], batch_size=settings["batch_size"],
                                        threads=settings["threads"]):
            parts.append(codes)
            skipped.update(bad)
            bar.update(len(chunk))
        ok = np.ones(len(r), bool)
        ok[[i - r.start for i in skipped]] = False
        store.write_shard(k, np.concatenate(parts), ok, skipped)
