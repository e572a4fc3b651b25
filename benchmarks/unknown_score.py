"""What the 'none of these' score costs per call: the neighbour distance against a run's reference codes, by batch
size.

    cnncodes extract --data ../shared/data/cifar-10-python.tar.gz --out CODES
    python benchmarks/unknown_score.py --codes CODES/codes.npz [--reference 5000] [--sizes 1,4,8,32,2048]
        [--repeats 21]

One BLAS thread, as `cnncodes serve` runs it. The reference: the unit codes of the first --reference training images
(default: as many as a run keeps, heads/unknown.py REFERENCE_MAX), projected onto their principal directions as a
run's detector keeps them (heads/unknown.py principal_directions).
For each batch size, the median milliseconds of a call of `UnknownDetector.parts` as a server makes it (ONNX
Runtime's product for fewer than FEW_ROWS images, NumPy's above), of the same distance computed by NumPy (OpenBLAS)
with each order of the product, and of `parts` measuring in every direction of the codes (no projection); the ratios
are to the shipped call, all timed in the same rounds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.codes.view import Codes  # noqa: E402
from cnncodes.heads.base import unit_rows  # noqa: E402
from cnncodes.heads.unknown import REFERENCE_MAX, UnknownDetector, principal_directions  # noqa: E402


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
    parser.add_argument("--codes", required=True, help="codes.npz (cnncodes extract)")
    parser.add_argument("--reference", type=int, default=REFERENCE_MAX)
    parser.add_argument("--sizes", default="1,4,8,32,2048")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    codes = Codes.load(args.codes)
    vectors = np.asarray(codes.vectors, np.float32)
    train = vectors[codes.splits == "train"]
    unit = unit_rows(train[:args.reference])
    projection = principal_directions(unit)

    def detector(directions: np.ndarray | None) -> UnknownDetector:
        reference = (unit if directions is None else unit @ directions).astype(np.float16)
        return UnknownDetector(reference, np.zeros(2, np.float32), np.ones(2, np.float32), 0.0, 0.95,
                               projection=directions)

    shipped_detector, every = detector(projection), detector(None)
    for served in (shipped_detector, every):
        served.prepare_few_rows()  # as `cnncodes serve` prepares its detector
    ref32, k = shipped_detector._reference32, shipped_detector.neighbour
    print(f"{len(unit):,} reference codes of {unit.shape[1]} dimensions, measured in {projection.shape[1]} directions")
    print("| images | parts() ms | reference on the right: ms (x) | reference on the left: ms (x) | every direction: "
          "ms (x) |\n|---|---|---|---|---|")
    queries = vectors[codes.splits != "train"]
    if max(int(n) for n in args.sizes.split(",")) > len(queries):
        parser.error(f"--sizes: the codes have {len(queries):,} images beside the training ones")
    for size in (int(s) for s in args.sizes.split(",")):
        features = queries[:size]
        logits = np.zeros((size, 10), np.float32)
        rows = unit_rows(features) @ projection
        shipped, right, left, whole = interleaved_medians([
            lambda: shipped_detector.parts(features, logits),
            lambda: kth_distance((unit_rows(features) @ projection) @ ref32.T, k),
            lambda: kth_distance((ref32 @ (unit_rows(features) @ projection).T).T, k),
            lambda: every.parts(features, logits)], args.repeats)
        np.testing.assert_allclose(shipped_detector.parts(features, logits)[:, 1], kth_distance(rows @ ref32.T, k),
                                   atol=1e-5)
        print(f"| {size} | {shipped:.2f} | {right:.2f} ({right / shipped:.2f}) | {left:.2f} ({left / shipped:.2f}) | "
              f"{whole:.2f} ({whole / shipped:.2f}) |", flush=True)


if __name__ == "__main__":
    main()
