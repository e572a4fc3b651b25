"""The local engine: this process's threads decode, its one model instance runs; each batch's codes go straight
to the store, so memory holds a batch, not the collection."""
from __future__ import annotations

from ..inference import encode, inference_model
from . import store_batch


def compute_codes(dataset, store, indices: list[int], spec, settings, bar) -> dict:
    model = inference_model(spec.name, settings.device, settings.graph)
    unstored = {}
    with store.writer() as append:
        for chunk, codes, bad in encode(dataset.read, indices, spec, model, device=settings.device,
                                        precision=settings.precision, batch_size=settings.batch_size,
                                        threads=settings.threads):
            unstored |= store_batch(append, [dataset.keys[i] for i in chunk], codes, [bad.get(i) for i in chunk])
            bar.update(len(chunk))
    return unstored
