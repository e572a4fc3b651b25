"""What the 'none of these' score costs per call: the neighbour distance against 10,000 reference codes, by batch size.

    python benchmarks/unknown_score.py [--reference 10000] [--dim 1280] [--sizes 1,4,8,32,2048] [--repeats 21]

One BLAS thread, as `cnncodes serve` runs it. For each batch size: the median milliseconds of a call of
`UnknownDetector.parts` as it is (the reference as the left operand of the product for fewer than FEW_ROWS images,
the usual order above), and of the same distance computed with each order of the product throughout; the ratios
are to the shipped choice, all three timed in the same rounds. The values are random unit vectors: the arithmetic, not
the data, sets the time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.heads.base import unit_rows  # noqa: E402
from cnncodes.heads.unknown import UnknownDetector  # noqa: E402


def kth_distance(similarity: np.ndarray, k: int) -> np.ndarray:
    return 1 + np.partition(-similarity, k - 1, axis=1)[:, k - 1]


def interleaved_medians(works: list, repeats: int) -> list[float]:
    """Median milliseconds of each work, timed in rounds of one call each (the machine's drift hits them alike)."""
    times = [[] for _ in works]
    for _ in range(repeats):
        for spent, work in zip(times, works):
            started = time.perf_counter()
            work()
            spent.append(time.perf_counter() - started)
    return [float(np.median(t) * 1000) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--sizes", default="1,4,8,32,2048")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    rng = np.random.default_rng(0)
    reference = unit_rows(rng.standard_normal((args.reference, args.dim), dtype=np.float32)).astype(np.float16)
    detector = UnknownDetector(reference, np.zeros(2, np.float32), np.ones(2, np.float32), 0.0, 0.95)
    ref32, k = detector._reference32, detector.neighbour
    print("| images | parts() ms | reference on the right: ms (x) | reference on the left: ms (x) |")
    print("|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        features = rng.standard_normal((size, args.dim), dtype=np.float32)
        logits = rng.standard_normal((size, 10), dtype=np.float32)
        rows = unit_rows(features)
        shipped, right, left = interleaved_medians([
            lambda: detector.parts(features, logits),
            lambda: kth_distance(unit_rows(features) @ ref32.T, k),
            lambda: kth_distance((ref32 @ unit_rows(features).T).T, k)], args.repeats)
        np.testing.assert_allclose(detector.parts(features, logits)[:, 1], kth_distance(rows @ ref32.T, k), atol=1e-5)
        print(f"| {size} | {shipped:.2f} | {right:.2f} ({right / shipped:.2f}) | {left:.2f} ({left / shipped:.2f}) |",
              flush=True)


if __name__ == "__main__":
    main()
