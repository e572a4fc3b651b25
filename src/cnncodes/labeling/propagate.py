"""Labels spread over the graph of each code's nearest neighbours (Zhou et al., NIPS 2003, "Learning with local and
global consistency"), then a softmax head trained on every image with its spread label, weighted by how sure the
spreading is. With few labels this uses the structure of all the codes, labelled or not.

Written here rather than taken from scikit-learn: its LabelSpreading builds the neighbour graph itself with a
brute-force search over the raw codes for every fit, while here the graph is built once per collection (the
labels change after every page of the labelling tool; the codes do not)."""
from __future__ import annotations

import numpy as np

from ..heads.base import unit_rows

NEIGHBOURS = 10  # fewer neighbours keep the spreading inside a class; 20 scored lower on validation at 100 labels
ALPHA = 0.99  # how much a node listens to its neighbours rather than to its own label
STEPS = 20
CHUNK = 4096
FIT_ROWS = 20_000  # unlabelled images the classifier learns from (a seeded draw): time stays flat as collections grow



class Propagation:
    """The neighbour graph of a collection's codes, built once; spread(labels) as often as labels change."""

    def __init__(self, codes, neighbours: int = NEIGHBOURS):
        import scipy.sparse as sp

        unit = unit_rows(codes)
        n = len(unit)
        k = max(1, min(neighbours, n - 1))
        rows, cols, weights = [], [], []
        for start in range(0, n, CHUNK):
            similarity = unit[start:start + CHUNK] @ unit.T
            np.fill_diagonal(similarity[:, start:start + CHUNK], -np.inf)  # not one's own neighbour
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
            rows.append(np.repeat(np.arange(start, start + len(nearest)), k))
            cols.append(nearest.ravel())
            weights.append(np.maximum(np.take_along_axis(similarity, nearest, 1).ravel(), 0) ** 3)
        graph = sp.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        graph = graph + graph.T
        degree = np.asarray(graph.sum(1)).ravel()
        scale = sp.diags(1 / np.sqrt(degree + 1e-12))
        self.graph = (scale @ graph @ scale).tocsr()
        self.codes = codes

    def spread(self, labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
        """labels: (N,) class index, -1 where unknown -> (N, classes) spread scores, rows summing to 1 (uniform
        where no label reaches)."""
        labels = np.asarray(labels)
        n_classes = n_classes or int(labels.max()) + 1
        given = np.zeros((len(labels), n_classes), np.float32)
        known = np.flatnonzero(labels >= 0)
        given[known, labels[known]] = 1
        scores = given.copy()
        for _ in range(STEPS):
            scores = ALPHA * (self.graph @ scores) + (1 - ALPHA) * given
        total = scores.sum(1, keepdims=True)
        return np.where(total > 0, scores / np.maximum(total, 1e-30), 1 / n_classes)

    def classifier(self, labels: np.ndarray, n_classes: int | None = None, c: float = 1.0, seed: int = 0):
        """A logistic regression (scikit-learn; L2 strength c, on unit-length codes) trained on the labelled images
        and up to FIT_ROWS others with their spread labels, weighted by that label's share of its row:
        (classifier, spread scores). Predict new codes with classifier.predict(unit_rows(codes))."""
        from sklearn.linear_model import LogisticRegression

        scores = self.spread(labels, n_classes)
        labels = np.asarray(labels)
        guess, weight = scores.argmax(1), scores.max(1)
        guess[labels >= 0], weight[labels >= 0] = labels[labels >= 0], 1
        others = np.flatnonzero(labels < 0)
        if len(others) > FIT_ROWS:
            others = np.random.default_rng(seed).choice(others, FIT_ROWS, replace=False)
        rows = np.sort(np.concatenate([np.flatnonzero(labels >= 0), others]))
        if len(np.unique(guess[rows])) < 2:
            return None, scores
        model = LogisticRegression(C=c, max_iter=500).fit(unit_rows(np.asarray(self.codes)[rows]), guess[rows],
                                                          sample_weight=weight[rows])
        return model, scores
