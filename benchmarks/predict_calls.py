"""Prediction in one process by calls of a few images, as a server makes them, with one and with two BLAS threads.

    python benchmarks/predict_calls.py --model RUN --images ../shared/data/cifar10-exact/test [--calls 1,4,64]

The same 256 images through `Predictor` in calls of N images each; printed per call size and BLAS thread count:
images/s and CPU milliseconds per image (the process's CPU time: threads that spin show here, not in wall time).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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
    print("| BLAS threads | images per call | images/s | CPU ms per image |\n|---|---|---|---|")
    for threads in (2, 1):
        with threadpool_limits(threads, user_api="blas"):
            for size in map(int, args.calls.split(",")):
                wall, cpu = time.perf_counter(), time.process_time()
                for start in range(0, len(blobs), size):
                    predictor(blobs[start:start + size])
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                print(f"| {threads} | {size} | {len(blobs) / wall:.1f} | {1000 * cpu / len(blobs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
