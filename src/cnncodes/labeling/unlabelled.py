"""A run's head learning from the collection's unlabelled images too: labels spread over the neighbour graph of all
the codes (propagate.py) become training rows beside the labelled ones, when that scores higher than the labelled
images alone, on the validation split (or by cross-validation over the labelled images when it is small).

Hard spread labels on a seeded draw of up to FIT_ROWS unlabelled images, for the same tuned softmax head a run
trains anyway (its model file, export and server stay as they are). `python benchmarks/unlabelled_run.py` measures
what they add (docs/benchmarks.md, "Unlabelled images in cnncodes run")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..heads import SoftmaxHead
from ..heads.base import stratified_folds
from ..heads.softmax import SMALL_VALIDATION
from .propagate import FIT_ROWS, Propagation


@dataclass
class SpreadChoice:
    """What a run decided about its unlabelled images, with the accuracies it decided on."""

    images: int  # unlabelled images in the collection
    used: bool
    chosen_on: str
    accuracy_without: float
    accuracy_with: float
    rows: np.ndarray | None = None  # the unlabelled rows (indices into the collection's codes) the head learns from
    labels: np.ndarray | None = None  # their spread labels

    def as_dict(self) -> dict:
        return {"images": self.images, "used": self.used, "chosen_on": self.chosen_on,
                "accuracy_without": self.accuracy_without, "accuracy_with": self.accuracy_with,
                "rows_used": 0 if self.rows is None else int(len(self.rows))}


def choose_spread(x_all, labels: np.ndarray, splits: np.ndarray, n_classes: int, c: float, seed: int = 0,
                  class_weight: str = "none", normalize: str = "none",
                  parts: list[slice] | None = None) -> SpreadChoice | None:
    """x_all: the codes of train, validation and unlabelled images (test images stay out of the graph), in memory or
    on disk; labels (-1 where none); splits ('train', 'validation', 'unlabeled'); c: the L2 strength the plain head
    chose; parts: the columns the neighbour graph compares (Propagation). None where there is nothing to decide (no
    unlabelled image, or too few labels to compare).

    The graph joins the labelled images and the drawn unlabelled ones only (memory and time stay bounded however
    many unlabelled images there are); an unlabelled image no label reaches gets no spread label."""
    from ..codes.matrix import take

    labels = np.asarray(labels)
    unlabelled = np.flatnonzero(splits == "unlabeled")
    train, validation = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "validation")
    if not len(unlabelled) or len(train) < 2:
        return None
    small = len(validation) < SMALL_VALIDATION
    labelled = np.concatenate([train, validation])
    folds = stratified_folds(labels[labelled], seed) if small else []
    if small and not folds:
        return None
    draw = np.random.default_rng(seed)
    sample = np.sort(draw.choice(unlabelled, FIT_ROWS, replace=False)) if len(unlabelled) > FIT_ROWS else unlabelled
    nodes = np.sort(np.concatenate([labelled, sample]))  # graph positions -> rows of x_all
    position = {int(r): n for n, r in enumerate(nodes)}
    x = np.asarray(take(x_all, nodes), np.float32)
    y = labels[nodes]
    graph = Propagation(x, parts=parts)
    train_at, validation_at = [np.array([position[int(r)] for r in rows], np.int64) for rows in (train, validation)]
    sample_at = np.array([position[int(r)] for r in sample], np.int64)

    def head():
        return SoftmaxHead("tuned", c_grid=(c,), seed=seed, class_weight=class_weight, normalize=normalize)

    def accuracy(fit_at, test_at, spread=None) -> float:
        rows, targets = fit_at, y[fit_at]
        if spread is not None:
            rows, targets = np.concatenate([fit_at, spread[0]]), np.concatenate([targets, spread[1]])
        order = np.argsort(rows)
        fitted = head().fit(x[rows[order]], targets[order], n_classes=n_classes)
        return fitted.score(x[test_at], y[test_at])

    def spread_from(known_at) -> tuple[np.ndarray, np.ndarray]:
        """(graph positions, spread labels) of the drawn unlabelled images some label reached."""
        given = np.full(len(y), -1)
        given[known_at] = y[known_at]
        scores = graph.spread(given, n_classes)[sample_at]
        reached = scores.max(1) > 1 / n_classes + 1e-6  # a uniform row: no label got there
        return sample_at[reached], scores[reached].argmax(1)

    if not small:
        chosen_on = "validation split"
        without = accuracy(train_at, validation_at)
        spread = spread_from(train_at)  # validation labels stay hidden: its accuracy stays honest
        with_spread = accuracy(train_at, validation_at, spread)
    else:
        labelled_at = np.concatenate([train_at, validation_at])
        chosen_on = f"{len(folds)}-fold cross-validation over the labelled images (the validation split is small)"
        scores = []
        for fit, held in folds:  # rows of labels[labelled], the order of labelled_at
            fit, held = labelled_at[fit], labelled_at[held]
            scores.append((accuracy(fit, held), accuracy(fit, held, spread_from(fit))))
        without, with_spread = (float(v) for v in np.mean(scores, 0))
        spread = spread_from(labelled_at)
    used = with_spread > without and len(spread[0]) > 0
    return SpreadChoice(len(unlabelled), used, chosen_on, float(without), float(with_spread),
                        nodes[spread[0]] if used else None, spread[1] if used else None)
