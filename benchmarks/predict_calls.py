"""Prediction in one process by calls of a few images, as a server makes them: with one and with two BLAS threads,
and with the call on every core (operators of fewer images than cores spread over them) or on one core, as a busy
server's lanes make them (`predictor(images, cores=1)`).

    python benchmarks/predict_calls.py --model RUN --images ../shared/data/cifar10-exact/test [--calls 1,4,64]

The same 256 images through `Predictor` in calls of N images each; printed per call size, BLAS thread count and
cores: images/s, the median milliseconds of a call, and CPU milliseconds per image (the process's CPU time:
threads that spin show here, not in wall time).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.predict import Predictor, list_images  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--calls", default="1,4,64")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    predictor = Predictor(args.model)
    blobs = [path.read_bytes() for path in list_images([args.images])[:256]]
    predictor(blobs[:8])  # warm-up
    print("| BLAS threads | cores of a call | images per call | images/s | ms per call (median) | CPU ms per image |\n"
          "|---|---|---|---|---|---|")
    for threads in (2, 1):
        with threadpool_limits(threads, user_api="blas"):
            for cores in (None, 1):
                for size in map(int, args.calls.split(",")):
                    calls, cpu = [], time.process_time()
                    for start in range(0, len(blobs), size):
                        t0 = time.perf_counter()
                        predictor(blobs[start:start + size], cores=cores)
                        calls.append(time.perf_counter() - t0)
                    cpu = time.process_time() - cpu
                    print(f"| {threads} | {cores or 'all'} | {size} | {len(blobs) / sum(calls):.1f} | "
                          f"{1000 * np.median(calls):.1f} | {1000 * cpu / len(blobs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
