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
                  class_weight: str = "none", normalize: str = "none") -> SpreadChoice | None:
    """x_all: the codes of train, validation and unlabelled images (test images stay out of the graph); labels (-1
    where none); splits ('train', 'validation', 'unlabeled'); c: the L2 strength the plain head chose. None where
    there is nothing to decide (no unlabelled image, or too few labels to compare)."""
    unlabelled = np.flatnonzero(splits == "unlabeled")
    train, validation = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "validation")
    if not len(unlabelled) or len(train) < 2:
        return None
    x = np.asarray(x_all, np.float32)
    graph = Propagation(x)
    draw = np.random.default_rng(seed)
    sample = np.sort(draw.choice(unlabelled, FIT_ROWS, replace=False)) if len(unlabelled) > FIT_ROWS else unlabelled

    def head():
        return SoftmaxHead("tuned", c_grid=(c,), seed=seed, class_weight=class_weight, normalize=normalize)

    def accuracy(fit_rows, test_rows, extra=None) -> float:
        rows, y = fit_rows, labels[fit_rows]
        if extra is not None:
            rows, y = np.concatenate([fit_rows, sample]), np.concatenate([y, extra])
        order = np.argsort(rows)  # rows in order: codes on disk read faster
        fitted = head().fit(x[rows[order]], y[order], n_classes=n_classes)
        return fitted.score(x[test_rows], labels[test_rows])

    def spread_from(known) -> np.ndarray:
        given = np.full(len(labels), -1)
        given[known] = labels[known]
        return graph.spread(given, n_classes)[sample].argmax(1)

    if len(validation) >= SMALL_VALIDATION:
        chosen_on = "validation split"
        without = accuracy(train, validation)
        spread_labels = spread_from(train)  # validation labels stay hidden: its accuracy stays honest
        with_spread = accuracy(train, validation, spread_labels)
    else:
        from sklearn.model_selection import StratifiedKFold

        labelled = np.concatenate([train, validation])
        counts = np.bincount(labels[labelled])
        folds = int(min(5, counts[counts > 0].min()))
        if folds < 2:
            return None
        chosen_on = f"{folds}-fold cross-validation over the labelled images (the validation split is small)"
        scores = []
        for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(labelled, labels[labelled]):
            fit, held = labelled[fit], labelled[held]
            scores.append((accuracy(fit, held), accuracy(fit, held, spread_from(fit))))
        without, with_spread = (float(v) for v in np.mean(scores, 0))
        spread_labels = spread_from(labelled)
    used = with_spread > without
    return SpreadChoice(len(unlabelled), used, chosen_on, float(without), float(with_spread),
                        sample if used else None, spread_labels if used else None)
