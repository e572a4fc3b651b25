"""Prediction in one process by calls of a few images, as a server makes them: with one and with two BLAS threads,
and with the call on every core (operators of fewer images than cores spread over them) or on one core, as a busy
server's lanes make them (`predictor(images, cores=1)`).

    python benchmarks/predict_calls.py --model RUN --images ../shared/data/cifar10-exact/test [--calls 1,4,64]
        [--rounds 3]

The same 256 images through `Predictor` in calls of N images each; printed per call size, BLAS thread count and
cores: images/s, the median milliseconds of a call, and CPU milliseconds per image (the process's CPU time:
threads that spin show here, not in wall time), with the model's unknown score and without it (a run's model loaded
with unknown=False: what the score adds to a call; a model without a detector, or an exported model.onnx, is timed as
it is). Each figure is the median of --rounds passes, the two predictors' passes alternating (the machine's drift
hits both alike).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.predict import Predictor, list_images  # noqa: E402


def one_pass(predictor: Predictor, blobs: list, size: int, cores: int | None) -> tuple[float, float, float]:
    """(images/s, median ms of a call, CPU ms per image) of the blobs in calls of `size` images."""
    calls, cpu = [], time.process_time()
    for start in range(0, len(blobs), size):
        t0 = time.perf_counter()
        predictor(blobs[start:start + size], cores=cores)
        calls.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu
    return len(blobs) / sum(calls), 1000 * float(np.median(calls)), 1000 * cpu / len(blobs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--calls", default="1,4,64")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    from threadpoolctl import threadpool_limits

    scored = Predictor(args.model)
    # without the score: a run's model (an exported one computes its score inside its graph whatever it is asked)
    predictors = [scored] + ([Predictor(args.model, unknown=False)] if scored.unknown is not None else [])
    blobs = [path.read_bytes() for path in list_images([args.images])[:256]]
    for predictor in predictors:
        predictor.warm()  # the network, and the unknown score's product for a few images (as `cnncodes serve` does)
        predictor(blobs[:8])
        predictor(blobs[:1])  # a call of fewer images than cores: its session with operator threads, built once
    print("| BLAS threads | cores of a call | images per call | images/s | ms per call (median) | CPU ms per image "
          "| without the unknown score: images/s | CPU ms per image |\n|---|---|---|---|---|---|---|---|")
    for threads in (2, 1):
        with threadpool_limits(threads, user_api="blas"):
            for cores in (None, 1):
                for size in map(int, args.calls.split(",")):
                    passes = [[] for _ in predictors]
                    for _ in range(args.rounds):
                        for spent, predictor in zip(passes, predictors):
                            spent.append(one_pass(predictor, blobs, size, cores))
                    (rate, call_ms, cpu_ms), *bare = (np.median(spent, axis=0) for spent in passes)
                    without = f"{bare[0][0]:.1f} | {bare[0][2]:.2f}" if bare else "(no score) | "
                    print(f"| {threads} | {cores or 'all'} | {size} | {rate:.1f} | {call_ms:.1f} | {cpu_ms:.2f} "
                          f"| {without} |", flush=True)


if __name__ == "__main__":
    main()
