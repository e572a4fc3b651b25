"""The one path from stored images to codes: decode, skip with a reason, batch, forward.

Every engine (local threads, Ray actors) and prediction call these functions, so an image gives the same codes,
or the same reason for being skipped, whichever way it travels.
"""
from __future__ import annotations

import itertools
import time
from functools import lru_cache
from pathlib import Path
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..backbones import Backbone, load_model
from ..errors import CnnCodesError
from ..data.images import TRANSIENT_ERRNOS, BadImage
from .onnx_graphs import Session

Reader = Callable[[int, int | None], np.ndarray]  # (item index, min_side) -> (H, W, 3) uint8: Dataset.read


def inference_model(backbone: str, device: str, graph=None, threads: int | None = None):
    """The process's one instance of a backbone, on the device, in the channels_last layout forward() feeds it;
    or, given an ONNX graph of it (file or bytes, see onnx_graphs.codes_graph), an ONNX Runtime session on
    `threads` CPUs (default: all the process may use)."""
    if graph is not None:
        return _session(graph, threads) if isinstance(graph, Path) else Session(graph, threads)
    import torch

    return load_model(backbone).to(device).to(memory_format=torch.channels_last)


@lru_cache(maxsize=8)
def _session(graph: Path, threads: int | None) -> Session:
    """One ONNX Runtime session per graph file in a process (a server predicts many times with the same graph)."""
    return Session(graph, threads)


def forward(model, windows: np.ndarray, spec: Backbone, device: str, precision: str) -> np.ndarray:
    """Codes of a batch of windows (N, size, size, channels) (Preprocess.window). An ONNX Runtime session normalises in
    its graph and carries its precision; for torch, the normalisation of Preprocess.network_input runs in torch's
    threads (on the device), and bf16 autocast with channels_last make the CPU fast (benchmarks/)."""
    if isinstance(model, Session):
        return model(windows)
    import torch

    pixels = torch.from_numpy(windows)
    if device != "cpu":
        pixels = pixels.pin_memory().to(device, non_blocking=True)
    # the RGB channels made float once, NHWC: permuted to NCHW that is already the channels_last layout
    x = (pixels[..., :3].float().permute(0, 3, 1, 2) - spec.preprocess.mean) / spec.preprocess.std
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16"):
        return model(x.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()


RETRY_SECONDS = (0.2, 1.0, 3.0)  # waits before retrying a transient read error


def prepare(read: Reader, i: int, spec: Backbone, pixels: bool = False):
    """Item i as the window of pixels the network sees (pixels: as the uint8 pixels an exported model takes), or
    the reason it cannot be used (a string). spec: anything with a `preprocess` (a Backbone, an exported model).

    A transient read error (EIO, EMFILE, a time-out) is retried and, if it persists, stops the extraction:
    recorded as a skip, it would be cached for good in the shard."""
    for wait in (*RETRY_SECONDS, None):
        try:
            rgb = read(i, spec.preprocess.min_decode_side)
            return spec.preprocess.pixels(rgb) if pixels else spec.preprocess.window(rgb)
        except BadImage as exc:
            return str(exc)
        except OSError as exc:  # unreadable file, symlink loop, vanished file
            if exc.errno not in TRANSIENT_ERRNOS:
                return f"cannot read: {exc.strerror or exc}"
            if wait is None:
                raise CnnCodesError(f"item {i}: read error {exc.strerror or exc} persisted after "
                                    f"{len(RETRY_SECONDS)} retries; finished shards are kept: run again") from None
            time.sleep(wait)


def encode_batch(items: Sequence, model, spec: Backbone, device: str, precision: str) -> tuple[np.ndarray, dict]:
    """Prepared items (windows or reasons) -> (codes with zero rows for the unusable ones, {position: reason})."""
    good = [k for k, item in enumerate(items) if not isinstance(item, str)]
    codes = np.zeros((len(items), spec.feature_dim), np.float32)
    if good:
        codes[good] = forward(model, np.stack([items[k] for k in good]), spec, device, precision)
    return codes, {k: item for k, item in enumerate(items) if isinstance(item, str)}


def encode(read: Reader, indices: Sequence[int], spec: Backbone, model, *, device: str, precision: str,
           batch_size: int, threads: int) -> Iterator[tuple[Sequence[int], np.ndarray, dict]]:
    """(indices, codes, {index: reason}) batch by batch, in order.

    PyTorch runs each batch on all cores (its operators are parallel) while the next batches decode in `threads`
    threads; an ONNX Runtime session is run by `threads` workers at once, each decoding its own batch and running
    it on one core, so that no core waits for another (onnx_graphs.Session); fewer images than `threads` run as
    one call whose operators use `threads` cores."""
    if isinstance(model, Session):
        if 1 < threads and len(indices) < threads:  # too few images for a run per core
            with ThreadPoolExecutor(threads) as pool:
                items = list(pool.map(lambda i: prepare(read, i, spec), indices))
            yield _chunk_codes(indices, items, model.with_threads(threads), spec, device, precision)
            return
        yield from _encode_in_workers(read, indices, spec, model.with_threads(1), device, precision, batch_size,
                                      threads)
        return
    chunks = [indices[s:s + batch_size] for s in range(0, len(indices), batch_size)]
    with ThreadPoolExecutor(threads) as pool:
        def submit(chunk) -> Iterable:
            return pool.map(lambda i: prepare(read, i, spec), chunk)

        pending = [submit(chunk) for chunk in chunks[:2]]
        for n, chunk in enumerate(chunks):
            items = list(pending.pop(0))
            if n + 2 < len(chunks):
                pending.append(submit(chunks[n + 2]))
            yield _chunk_codes(chunk, items, model, spec, device, precision)


def _chunk_codes(chunk: Sequence[int], items: Sequence, model, spec: Backbone, device: str, precision: str) -> tuple:
    """encode's answer for one chunk of indices and their prepared items: (indices, codes, {index: reason})."""
    codes, bad = encode_batch(items, model, spec, device, precision)
    return chunk, codes, {chunk[k]: why for k, why in bad.items()}


def _encode_in_workers(read: Reader, indices: Sequence[int], spec: Backbone, session: Session, device: str,
                       precision: str, batch_size: int, workers: int) -> Iterator[tuple]:
    """Each worker decodes a batch and runs the one-threaded session on it; two batches per worker are in flight,
    so memory holds a few batches however many images there are. Small sets are split so that every worker runs."""
    size = max(1, min(batch_size, -(-len(indices) // workers)))
    chunks = iter([indices[s:s + size] for s in range(0, len(indices), size)])

    def work(chunk):
        return _chunk_codes(chunk, [prepare(read, i, spec) for i in chunk], session, spec, device, precision)

    if workers == 1:  # the caller's thread is the one worker (a server's lane)
        yield from map(work, chunks)
        return
    pool = ThreadPoolExecutor(workers)
    pending = deque(pool.submit(work, chunk) for chunk in itertools.islice(chunks, 2 * workers))
    try:
        while pending:
            done = pending.popleft().result()
            pending.extend(pool.submit(work, chunk) for chunk in itertools.islice(chunks, 1))
            yield done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
