"""Know your data from its codes: likely label errors, near-duplicates (and train/test leaks), outliers.

Everything runs on cached codes in seconds: out-of-fold probabilities from a softmax probe, ranked by cleanlab's
confident learning; duplicates by exact cosine similarity of centred codes; outliers by their distance to their
nearest neighbours.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..codes.view import Codes, self_similarity_blocks
from ..errors import CnnCodesError
from ..heads.base import cross_validated_scores, in_shared_class, stratified_folds

PROBE_DIMENSIONS = 256  # the probe and the candidate search work on this many principal components (speed)
DUPLICATE_SIMILARITY = 0.85  # cosine of centred codes from which two images are near-duplicates (README, audit)
COPY_CORRELATION = 0.99  # copies (resized, re-encoded) are pairs whose 16 x 16 grey thumbnails correlate this much
THUMBNAIL_SIDE = 16
CANDIDATE_MARGIN = 0.05  # pairs are first searched in the principal components, this much below the threshold
OUTLIER_SHARE = 0.01  # the most atypical 1% of the images are listed
NEIGHBOURS = 10  # an image's outlier score: 1 - its mean cosine to this many nearest images
PROBE_C = 0.01  # the probe's L2 strength on collections of SMALL images or more (chosen on CIFAR-10: benchmarks/audit.py)
SMALL = 1000  # below this many labelled (non-test) images: the full codes, and the probe's C cross-validated
SMALL_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
FEW_PER_CLASS = 20  # below this many labelled images in some class, a flagged image is as often merely unusual


@dataclass
class AuditResult:
    """Ranked findings; each list holds row indices into `codes` (pairs for duplicates) with scores."""

    codes: Codes
    proba: np.ndarray  # (N, K): out-of-fold for train/validation rows, the run's (or a probe's) for test rows
    quality: np.ndarray  # (N,) cleanlab label quality: low = the given label is likely wrong
    label_issues: np.ndarray  # row indices cleanlab flags, most likely first
    pairs: np.ndarray  # (P, 2) row indices of near-duplicate pairs: near in codes, or copies by their pixels
    similarity: np.ndarray  # (P,) cosine similarity of their centred codes
    correlation: np.ndarray  # (P,) correlation of their grey thumbnails (nan where not compared)
    outlier_scores: np.ndarray  # (N,) 1 - mean cosine to the nearest images (principal components): high = atypical
    outliers: np.ndarray  # row indices of the highest OUTLIER_SHARE of outlier_scores, most atypical first
    seconds: dict = field(default_factory=dict)
    # classes with fewer than 2 train/validation images: no probe that never saw an image of theirs knows their class,
    # so the labels of their images are not checked
    unchecked_classes: list = field(default_factory=list)
    probe_c: float = PROBE_C  # the probe's L2 strength: PROBE_C, or cross-validated on a small collection (full codes)

    @property
    def leaks(self) -> np.ndarray:
        """The pairs that join a test image to a training or validation image."""
        test = self.codes.splits[self.pairs] == "test"
        return np.flatnonzero(test.sum(1) == 1) if len(self.pairs) else np.zeros(0, np.int64)

    @property
    def probe_accuracy(self) -> float:
        """How often the out-of-fold suggestion agrees with the given label (train and validation images): how far
        to trust the suggestions."""
        known = self.codes.splits != "test"
        return float((self.proba[known].argmax(1) == self.codes.labels[known]).mean())

    def unchecked(self) -> str | None:
        """Which labels the audit could not check, or None."""
        if not self.unchecked_classes:
            return None
        names = ", ".join(self.unchecked_classes)
        return (f"the labels of {names} are not checked: a class needs 2 training or validation images for a probe "
                "that never saw one of them to know it (label more images of it, or check these labels)")

    def weak_suggestions(self) -> str | None:
        """Why the label suggestions deserve little trust on this collection, or None."""
        known = self.codes.splits != "test"
        fewest = int(np.bincount(self.codes.labels[known], minlength=len(self.codes.class_names)).min())
        if fewest >= FEW_PER_CLASS:
            return None
        return (f"the smallest class has {fewest} labelled image{'s' * (fewest != 1)}: with fewer than "
                f"{FEW_PER_CLASS} per class the probe behind the suggestions agrees with the given labels on "
                f"{self.probe_accuracy:.0%} of the images, and a flagged image is often just unusual; check each one "
                "before relabelling")


def principal_components(x: np.ndarray, n: int = PROBE_DIMENSIONS, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    n = min(n, x.shape[0], x.shape[1])
    return PCA(n, svd_solver="randomized", random_state=seed).fit_transform(x).astype(np.float32)


def probe(x: np.ndarray, y: np.ndarray, n_classes: int, c: float = PROBE_C):
    """x -> class probabilities of the tuned softmax head at a fixed C, fitted on (x, y): the run's own head, so
    the audit's probabilities come from the model a user trains."""
    from ..heads import SoftmaxHead

    return SoftmaxHead(c_grid=(c,)).fit(x, y, n_classes=n_classes).predict_proba


def cross_validated_c(x: np.ndarray, y: np.ndarray, folds: int, seed: int = 0) -> float:
    """The probe's L2 strength with the lowest stratified k-fold log-loss on standardised codes: on a small collection
    the fixed PROBE_C gives probabilities in which no label stands out."""
    rows = cross_validated_scores(x, y, SMALL_C_GRID, stratified_folds(y, seed, folds), max_iter=2000)
    return min(rows, key=lambda row: row["log_loss"])["C"]


def out_of_fold_proba(x: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0,
                      c: float = PROBE_C) -> np.ndarray:
    """Each row's class probabilities from a probe that never saw it (K folds, stratified). An image whose class has
    no other is in every fit (heads.base.stratified_folds): its row comes from a probe that saw it."""
    splits = stratified_folds(y, seed, folds)
    if not splits:
        raise CnnCodesError("out-of-fold probabilities need two classes of at least 2 labelled images each")
    out = np.zeros((len(x), n_classes), np.float32)
    for train, held in splits:
        out[held] = probe(x[train], y[train], n_classes, c)(x[held])
    lone = ~in_shared_class(y)
    if lone.any():
        out[lone] = probe(x, y, n_classes, c)(x[lone])
    return out


def scan(x: np.ndarray, threshold: float, k: int = NEIGHBOURS, block: int = 2048):
    """One pass of exact blockwise products over unit rows: every pair (i < j) with cosine >= threshold (most similar
    first), and each row's mean cosine to its k nearest other rows. Written here because one scan serves both
    (cleanlab's nearest-neighbour outlier score would run a second, scikit-learn, neighbour search)."""
    import torch

    k = min(k, len(x) - 1)
    pairs, sims, knn = [], [], np.zeros(len(x), np.float32)
    for start, s in self_similarity_blocks(x, block):
        knn[start:start + len(s)] = s.topk(k, dim=1).values.mean(1).numpy()
        r, c = torch.nonzero(s >= threshold, as_tuple=True)
        keep = c > r + start
        pairs.append(torch.stack([r[keep] + start, c[keep]], 1).numpy())
        sims.append(s[r[keep], c[keep]].numpy())
    pairs, sims = np.concatenate(pairs).astype(np.int64), np.concatenate(sims)
    order = np.argsort(-sims, kind="stable")
    return pairs[order], sims[order], knn


def centred_unit(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Codes minus the collection's mean, scaled to unit length: cosine similarity becomes a dot product. Centring
    matters: pooled ReLU activations are all positive, so raw codes of any two images have a high cosine."""
    v = np.asarray(x, np.float32) - mean
    return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)


def grey_thumbnail(rgb: np.ndarray) -> np.ndarray:
    """An image as a 16 x 16 grey thumbnail, zero mean and unit length: correlation is a dot product. Compression
    and resizing change a network's codes far more than these few low frequencies (benchmarks/audit.py)."""
    from PIL import Image

    g = np.asarray(Image.fromarray(rgb).convert("L").resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.BOX),
                   np.float32).ravel()
    g -= g.mean()
    return g / (np.linalg.norm(g) + 1e-6)


def near_duplicates(x: np.ndarray, candidates: np.ndarray, threshold: float, thumbnails: np.ndarray | None):
    """(pairs, code similarity, thumbnail correlation): candidate pairs (found in the principal components) whose
    full centred codes have cosine >= threshold, and pairs whose thumbnails correlate at least COPY_CORRELATION
    (copies whose codes moved, such as JPEG re-encodings of small images), by an exact scan of the thumbnails."""
    found = {tuple(p) for p in candidates.tolist()}
    if thumbnails is not None:
        found |= {tuple(p) for p in scan(thumbnails, COPY_CORRELATION)[0].tolist()}
    if not found:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
    pairs = np.array(sorted(found), np.int64)
    v = centred_unit(x, x.mean(0))
    code = np.einsum("ij,ij->i", v[pairs[:, 0]], v[pairs[:, 1]])
    pixels = (np.einsum("ij,ij->i", thumbnails[pairs[:, 0]], thumbnails[pairs[:, 1]]) if thumbnails is not None
              else np.full(len(pairs), np.nan, np.float32))
    keep = (code >= threshold) | (pixels >= COPY_CORRELATION)
    order = np.argsort(-np.where(pixels[keep] >= COPY_CORRELATION, 2.0, 0.0) - code[keep], kind="stable")
    return pairs[keep][order], code[keep][order], pixels[keep][order]


def audit_codes(codes: Codes, test_proba: np.ndarray | None = None, *, thumbnails: np.ndarray | None = None,
                folds: int = 5, threshold: float = DUPLICATE_SIMILARITY, seed: int = 0) -> AuditResult:
    """Audit a dataset's codes. test_proba: the run's probabilities for the test rows (in their order); without it a
    probe trained on every non-test row gives them. thumbnails: grey_thumbnail of every row's image, to find copies
    whose codes moved (without them only codes compare images)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    x, y, k = np.asarray(codes.vectors), codes.labels, len(codes.class_names)  # the audit works in memory
    if len(x) < 10:
        raise CnnCodesError(f"an audit needs at least 10 images with codes (got {len(x)})")
    seconds, t = {}, time.perf_counter()
    reduced = principal_components(x, seed=seed)
    seconds["principal components"] = time.perf_counter() - t
    t = time.perf_counter()
    test = codes.splits == "test"
    proba = np.zeros((len(x), k), np.float32)
    small = (~test).sum() < SMALL and len(stratified_folds(y[~test], seed, folds)) >= 2
    # the principal components are for speed on large collections; on a few images their standardised trailing
    # components are noise the probe drowns in (near-uniform probabilities): the full codes, and C cross-validated
    features = x if small else reduced
    c = cross_validated_c(features[~test], y[~test], folds, seed) if small else PROBE_C
    proba[~test] = out_of_fold_proba(features[~test], y[~test], k, folds, seed, c)
    if test.any():
        proba[test] = test_proba if test_proba is not None else probe(features[~test], y[~test], k, c)(features[test])
    seconds["out-of-fold probabilities"] = time.perf_counter() - t
    t = time.perf_counter()
    quality = get_label_quality_scores(y, proba, method="self_confidence")
    with warnings.catch_warnings():  # "may not flag all label issues in class": named below instead
        warnings.filterwarnings("ignore", "May not flag all label issues", UserWarning)
        issues = find_label_issues(y, proba, return_indices_ranked_by="self_confidence")
    counts = np.bincount(y[~test], minlength=k)
    unchecked = np.flatnonzero((counts < 2) & (np.bincount(y, minlength=k) > 0))  # no probe could know them
    issues = [i for i in issues if y[i] not in unchecked]
    seconds["label issues"] = time.perf_counter() - t
    t = time.perf_counter()
    candidates, _, knn = scan(centred_unit(reduced, 0), threshold - CANDIDATE_MARGIN)
    pairs, similarity, correlation = near_duplicates(x, candidates, threshold, thumbnails)
    scores = 1 - knn  # far from its nearest neighbours: far from every class
    outliers = np.argsort(-scores, kind="stable")[:max(1, int(round(OUTLIER_SHARE * len(x))))]
    seconds["near-duplicates and outliers"] = time.perf_counter() - t
    return AuditResult(codes, proba, quality, np.asarray(issues, np.int64), pairs, similarity, correlation, scores,
                       outliers, seconds, [codes.class_names[n] for n in unchecked], c)


def dataset_thumbnails(dataset, ids, progress: bool = False) -> np.ndarray:
    """grey_thumbnail of each image (by id), decoded at reduced size where the format allows; an unreadable image
    gets a zero thumbnail (it correlates with nothing)."""
    from tqdm import tqdm

    from ..data.images import BadImage

    index = dataset.row_of()
    out = np.zeros((len(ids), THUMBNAIL_SIDE * THUMBNAIL_SIDE), np.float32)
    for n, item_id in enumerate(tqdm(ids, desc="audit: thumbnails", unit="img", disable=None if progress else True, leave=False)):
        try:
            out[n] = grey_thumbnail(dataset.read(index[str(item_id)], THUMBNAIL_SIDE))
        except (BadImage, OSError):
            pass
    return out
