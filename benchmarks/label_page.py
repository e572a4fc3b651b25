"""How long the label page waits for its next images: one page of 20 chosen by `choose_to_label` after 0, 200 and
1,000 labels, in collections of 5,000 and 50,000 codes, with the reduced codes computed once as the server does.

    cnncodes extract --data ../shared/data/cifar-10-python.tar.gz --runtime onnx --out CODES
    python benchmarks/label_page.py --codes CODES/codes.npz [--sizes 5000,50000] [--labelled 0,200,1000]

Each page is timed with k-means as the tool runs it (mini-batches beyond FULL_KMEANS_CLUSTERS clusters) and with
full k-means at every size, in the same process; labels are random classes on random images (the time does not
depend on which).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.labeling import choose  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", required=True)
    parser.add_argument("--sizes", default="5000,50000")
    parser.add_argument("--labelled", default="0,200,1000")
    parser.add_argument("--page", type=int, default=20)
    args = parser.parse_args()
    codes = np.load(args.codes)["codes"]
    tool = choose.FULL_KMEANS_CLUSTERS
    print("| collection | labels | page of | seconds, as the tool runs | seconds, full k-means |\n|---|---|---|---|---|")
    for size in map(int, args.sizes.split(",")):
        x = codes[:size]
        points = choose.reduce_codes(x)
        rng = np.random.default_rng(0)
        for labelled in map(int, args.labelled.split(",")):
            labels = np.full(size, -1)
            labels[rng.choice(size, labelled, replace=False)] = rng.integers(0, 10, labelled)
            seconds = []
            for clusters in (tool, 10**9):
                choose.FULL_KMEANS_CLUSTERS = clusters
                t0 = time.perf_counter()
                choose.choose_to_label(x, labels, args.page, points=points)
                seconds.append(time.perf_counter() - t0)
            choose.FULL_KMEANS_CLUSTERS = tool
            print(f"| {size:,} | {labelled:,} | {args.page} | {seconds[0]:.1f} | {seconds[1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
