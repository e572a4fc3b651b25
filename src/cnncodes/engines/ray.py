"""Extraction on Ray Data: actors load the model once (map_batches with a callable class) and run the very
same preprocessing and forward pass as the local engine; the driver writes each batch of codes into the same store as
it arrives and commits a shard when its last row is in, so it holds no rows of unfinished shards and later steps
cannot tell which engine ran."""
from __future__ import annotations

import logging

import numpy as np

from .. import runtime
from ..code_matrix import consecutive_runs
from ..errors import CnnCodesError


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

        from ..backbones import get_backbone
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


def compute_shards(dataset, store, shards: list[int], spec, settings: dict, bar) -> None:
    ray = _require_ray()
    address, concurrency = settings.get("address"), settings.get("concurrency")
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, **({} if address else {"num_cpus": runtime.cpu_count()}))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own tqdm bar counts images
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpu = settings["device"] != "cpu"
    actors = concurrency or max(1, cpus // 2)
    threads = max(1, cpus // actors)
    indices = [i for k in shards for i in store.shard_range(k)]
    dataset_ref = [ray.put(dataset)]  # the items travel as indices; folders must be at the same path on every node
    graph_ref = [ray.put(settings["graph"].read_bytes())] if settings.get("graph") else []
    # Ray Data restarts a failed actor and retries its batches (max_restarts=-1 is its default for actor pools).
    codes = ray.data.from_items([{"index": i} for i in indices]).map_batches(
        CodesActor, fn_constructor_kwargs=dict(dataset_ref=dataset_ref, backbone=spec.name, flip=spec.preprocess.flip,
                                               device=settings["device"], precision=settings["precision"],
                                               threads=threads, graph_ref=graph_ref),
        batch_size=settings["batch_size"], compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0 if gpu else threads, num_gpus=1 if gpu else 0,
    )
    # rows go to the store as they arrive (Ray may finish shards out of order): the driver keeps only counts
    left = {k: len(store.shard_range(k)) for k in shards}
    skipped = {k: {} for k in shards}
    shard_of = {i: k for k in shards for i in store.shard_range(k)}
    for batch in codes.iter_batches(batch_size=None, batch_format="numpy"):
        index = batch["index"].astype(np.int64)
        order = np.argsort(index)
        index, rows, reasons = index[order], batch["codes"][order], batch["reason"][order]
        for a, b in consecutive_runs(index):
            store.write_rows(int(index[a]), rows[a:b])
        for i, reason in zip(index.tolist(), reasons):
            k = shard_of[i]
            left[k] -= 1
            if reason:
                skipped[k][i] = reason
            if left[k] == 0:
                store.commit(k, skipped.pop(k))
        bar.update(len(index))
    if any(left.values()):
        raise CnnCodesError(f"Ray returned no codes for shards {sorted(k for k, n in left.items() if n)}; "
                            "run again to retry them")
