"""Which images are worth a label next, from the codes alone (a Python function: notebooks and the benchmark call it).

Typical and diverse images: k-means over all the codes with as many clusters as there will be labels, and from each
cluster that holds no labelled image yet, largest first, the image nearest its centre (the cold-start choice of
TypiClust, Hacohen et al., ICML 2022, with "nearest the centre" for "densest"). With cold_start=K, once every class
seen has K labels, the images the spread labels are least sure of (smallest gap between the two best classes), kept
diverse the same way, come instead. By validation accuracy in benchmarks/few_labels.py (seed 0) that switch helps
at 500 labels and hurts more at 1,000 (after 10 labels per class, 88.2% and 86.4%, against 87.5% and 88.0% without
it: the unsure images sit between classes and mislead the spreading), so by default it never happens.
"""
from __future__ import annotations

import numpy as np

from ..heads.base import unit_rows
from .propagate import Propagation

COLD_START = None  # labels per class seen before uncertainty takes over; None: never (see above)
SHORTLIST = 10  # the least sure n * SHORTLIST images are clustered into n groups
PCA_DIMS = 64  # k-means runs on this many principal components of the unit codes
FULL_KMEANS_CLUSTERS = 100  # k-means with more clusters runs by mini-batches (_cluster)


def choose_to_label(codes, labels, n: int, *, seed: int = 0, propagation: Propagation | None = None,
                    offer: np.ndarray | None = None, cold_start: int | None = COLD_START,
                    points: np.ndarray | None = None) -> np.ndarray:
    """Indices of n images to label next. codes: (N, D) codes of the whole collection; labels: (N,) class index,
    -1 where there is none yet; propagation: the collection's Propagation (built when absent); offer: (N,) bool,
    the images that may be chosen (default: every unlabelled one; skipped images are left out this way); points:
    reduce_codes(codes, seed, columns=propagation.parts), computed when absent (a caller asking page after page
    computes them once). With a propagation, the choice compares the codes its graph compares (Propagation parts)."""
    labels = np.asarray(labels)
    offer = np.ones(len(labels), bool) if offer is None else np.asarray(offer, bool)
    unlabelled = np.flatnonzero((labels < 0) & offer)
    n = min(n, len(unlabelled))
    if n <= 0:
        return np.zeros(0, np.int64)
    counts = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, int)
    seen = counts[counts > 0]
    columns = None if propagation is None else propagation.parts
    if cold_start is None or len(seen) < 2 or seen.min() < cold_start:
        points = reduce_codes(codes, seed, columns=columns) if points is None else points
        return _typical_and_diverse(points, labels, offer, n, seed)
    propagation = propagation or Propagation(codes)
    scores = propagation.spread(labels)[unlabelled]
    best_two = np.sort(scores, axis=1)[:, -2:]
    unsure = unlabelled[np.argsort(best_two[:, 1] - best_two[:, 0], kind="stable")[:n * SHORTLIST]]
    return unsure[_nearest_centres(reduce_codes(codes, seed, unsure, propagation.parts), n, seed)]


def reduce_codes(codes, seed: int = 0, rows: np.ndarray | None = None,
                 columns: list[slice] | None = None) -> np.ndarray:
    """Unit codes (of `rows`, or all; of `columns`, or all) on their first PCA_DIMS principal components: k-means'
    distances, cheaply. Of several networks' codes side by side, their final codes (backbones.final_code_columns)
    chose far better first labels of CIFAR-10 than all columns with mid-level ones (docs/benchmarks.md, "Few
    labels")."""
    from sklearn.decomposition import PCA

    codes = codes if rows is None else np.asarray(codes)[rows]
    if columns is not None:
        codes = np.hstack([np.asarray(codes)[:, c] for c in columns])
    unit = unit_rows(codes)
    dims = min(PCA_DIMS, *unit.shape)
    return PCA(dims, random_state=seed).fit_transform(unit) if dims < unit.shape[1] else unit


def _cluster(points: np.ndarray, k: int, seed: int):
    """k-means; beyond FULL_KMEANS_CLUSTERS clusters by mini-batches. k grows with the labels (a page of 20 after
    1,000 labels clusters into 1,020): on 50,000 codes full k-means took 17.7 s for that, mini-batches 4.6 s
    (benchmarks/label_page.py). On CIFAR-10 (benchmarks/few_labels.py, seed 0, validation accuracy after
    propagation) mini-batches at every k chose worse images for the first labels (72.4% against 75.4% with 10) and
    as good ones from 50 on (84.2% against 83.7% with 50, 88.3% against 88.1% with 1,000)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if k <= FULL_KMEANS_CLUSTERS:
        return KMeans(k, n_init=1, random_state=seed).fit(points)
    return MiniBatchKMeans(k, n_init=1, random_state=seed, batch_size=4096).fit(points)


def _nearest_centres(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Positions of the point nearest each of k k-means centres (distinct)."""
    fit = _cluster(points, k, seed)
    return np.array([_nearest(points, fit.labels_ == c, fit.cluster_centers_[c]) for c in range(k)])


def _nearest(points: np.ndarray, members: np.ndarray, centre: np.ndarray) -> int:
    rows = np.flatnonzero(members)
    return int(rows[np.argmin(((points[rows] - centre) ** 2).sum(1))])


def _typical_and_diverse(points, labels: np.ndarray, offer: np.ndarray, n: int, seed: int) -> np.ndarray:
    labelled = labels >= 0
    open_ = ~labelled & offer
    k = min(len(points), int(labelled.sum()) + n)
    fit = _cluster(points, k, seed)
    covered = set(fit.labels_[labelled])
    sizes = np.bincount(fit.labels_, minlength=k)
    picks = []
    for c in np.argsort(-sizes, kind="stable"):
        if c in covered:
            continue
        members = (fit.labels_ == c) & open_
        if members.any():
            picks.append(_nearest(points, members, fit.cluster_centers_[c]))
        if len(picks) == n:
            break
    if len(picks) < n:  # clusters ran out (labelled images in most): the rest at random among the unlabelled
        rest = np.setdiff1d(np.flatnonzero(open_), picks)
        picks += list(np.random.default_rng(seed).choice(rest, n - len(picks), replace=False))
    return np.array(picks, np.int64)
