"""Extraction on Ray Data: actors load the model once (map_batches with a callable class) and run the very
same preprocessing and forward pass as the local engine; the driver writes each batch of codes into the same store as
it arrives, so later steps cannot tell which engine ran."""
from __future__ import annotations

import logging

import numpy as np

from .. import runtime
from ...errors import CnnCodesError
from . import store_batch


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise CnnCodesError("--engine ray needs Ray Data: pip install 'cnncodes[ray]' (or pip install 'ray[data]')") from None
    return ray


class CodesActor:
    """One per Ray worker: builds the backbone once, then turns batches of item indices into codes, reading each
    item with the dataset's own reader (the same decode, skip and forward as the local engine)."""

    def __init__(self, dataset_ref: list, backbone: str, flip: bool, device: str, precision: str, threads: int,
                 graph_ref: list):
        import ray

        from ...backbones import get_backbone
        from ..inference import inference_model

        if not graph_ref:  # ONNX Runtime sessions take the actor's CPUs themselves
            import torch

            torch.set_num_threads(threads)
        self.dataset = ray.get(dataset_ref[0])  # wrapped in a list so that Ray hands over the reference itself
        self.spec = get_backbone(backbone).with_flip(flip)
        graph = ray.get(graph_ref[0]) if graph_ref else None  # an ONNX graph's bytes: no file on the worker
        self.model = inference_model(backbone, device, graph, threads)  # several actors share a node's CPUs
        self.device, self.precision = device, precision

    def __call__(self, batch: dict) -> dict:
        from ..inference import encode_batch, prepare

        items = [prepare(self.dataset.read, int(i), self.spec) for i in batch["index"]]
        codes, bad = encode_batch(items, self.model, self.spec, self.device, self.precision)
        reasons = [bad.get(k, "") for k in range(len(items))]
        return {"index": np.asarray(batch["index"]), "codes": codes, "reason": np.array(reasons, dtype=object)}


def actor_plan(cpus: int, gpus: int, gpu: bool, concurrency: int | None) -> tuple[int, int]:
    """(actors, CPU threads each): one actor per GPU on GPU nodes (each asks for one: more could not be placed),
    else one per two CPUs; --concurrency overrides the count."""
    actors = concurrency or (max(1, gpus) if gpu else max(1, cpus // 2))
    return actors, max(1, cpus // actors)


def compute_codes(dataset, store, indices: list[int], spec, settings, bar) -> dict:
    ray = _require_ray()
    address, concurrency = settings.address, settings.concurrency
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, **({} if address else {"num_cpus": runtime.cpu_count()}))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own tqdm bar counts images
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    resources = ray.cluster_resources()
    gpu = settings.device != "cpu"
    actors, threads = actor_plan(int(resources.get("CPU", 1)), int(resources.get("GPU", 0)), gpu, concurrency)
    dataset_ref = [ray.put(dataset)]  # the items travel as indices; folders must be at the same path on every node
    graph_ref = [ray.put(settings.graph.read_bytes())] if settings.graph else []
    # Ray Data restarts a failed actor and retries its batches (max_restarts=-1 is its default for actor pools).
    codes = ray.data.from_items([{"index": i} for i in indices]).map_batches(
        CodesActor, fn_constructor_kwargs=dict(dataset_ref=dataset_ref, backbone=spec.name, flip=spec.preprocess.flip,
                                               # the GPU Ray gave the actor is its "cuda"
                                               device="cuda" if gpu else "cpu", precision=settings.precision,
                                               threads=threads, graph_ref=graph_ref),
        batch_size=settings.batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0 if gpu else threads, num_gpus=1 if gpu else 0,
    )
    # each batch goes to the store as it arrives (in whatever order Ray finishes them): the driver holds one batch
    unstored, done = {}, 0
    with store.writer() as append:
        for batch in codes.iter_batches(batch_size=None, batch_format="numpy"):
            index = batch["index"].astype(np.int64).tolist()
            unstored |= store_batch(append, [dataset.keys[i] for i in index], batch["codes"],
                                    [r or None for r in batch["reason"]])
            done += len(index)
            bar.update(len(index))
    if done < len(indices):
        raise CnnCodesError(f"Ray returned codes for {done:,} of {len(indices):,} images; run again to compute the "
                            "rest (those it returned are stored)")
    return unstored
