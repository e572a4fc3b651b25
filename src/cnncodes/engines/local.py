"""The local engine: this process's threads decode, its one model instance runs; each batch's codes go straight
to the store, so memory holds a batch, not a shard."""
from __future__ import annotations

from ..inference import encode, inference_model


def compute_shards(dataset, store, shards: list[int], spec, settings: dict, bar) -> None:
    model = inference_model(spec.name, settings["device"], settings.get("graph"))
    for k in shards:
        r = store.shard_range(k)
        skipped = {}
        for chunk, codes, bad in encode(dataset.read, r, spec, model, device=settings["device"],
                                        precision=settings["precision"], batch_size=settings["batch_size"],
                                        threads=settings["threads"]):
            store.write_rows(chunk[0], codes)
            skipped.update(bad)
            bar.update(len(chunk))
        store.commit(k, skipped)
