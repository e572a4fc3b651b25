"""Labels spread over the graph of each code's nearest neighbours (Zhou et al., NIPS 2003, "Learning with local and
global consistency"), then a softmax head trained on every image with its spread label, weighted by how sure the
spreading is. With few labels this uses the structure of all the codes, labelled or not.

Both work on power-normalised codes (the signed square root of each activation, centred, unit length: Perronnin et
al., ECCV 2010), and the spread scores give each class the same total mass before an image takes its best class
(class mass normalisation, Zhu et al., ICML 2003), so that a class whose few labels sit in a dense region does not
swallow its neighbours. Chosen on the validation split of the official CIFAR-10 archive's Lite0 codes
(benchmarks/few_labels.py, docs/benchmarks.md): with 100 labels 84.1% -> 86.8% validation accuracy, with 1,000
86.7% -> 88.3%; 20 neighbours and a self-training round (the classifier's probabilities spread again) did not help.

Written here rather than taken from scikit-learn: its LabelSpreading builds the neighbour graph itself with a
brute-force search over the raw codes for every fit, while here the graph is built once per collection (the
labels change after every page of the labelling tool; the codes do not)."""
from __future__ import annotations

import numpy as np

from ..heads.base import unit_rows

NEIGHBOURS = 10  # fewer neighbours keep the spreading inside a class; 20 scored lower on validation at 100 labels
C = 10.0  # the classifier's L2 strength (1 and 100 scored lower on validation at 100 and 1,000 labels)
ALPHA = 0.99  # how much a node listens to its neighbours rather than to its own label
STEPS = 20
CHUNK = 4096
FIT_ROWS = 20_000  # unlabelled images the classifier learns from (a seeded draw): time stays flat as collections grow


def power_normalised(codes, mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(signed square roots of the codes, centred on `mean` (theirs when None) and at unit length; that mean)."""
    root = np.asarray(codes, np.float32)
    root = np.sign(root) * np.sqrt(np.abs(root))
    mean = root.mean(0) if mean is None else mean
    return unit_rows(root - mean), mean


class SpreadClassifier:
    """A logistic regression on power-normalised codes: predict and predict_proba take the codes as extracted."""

    def __init__(self, model, mean: np.ndarray):
        self.model, self.mean = model, mean
        self.classes_ = model.classes_

    def predict(self, codes) -> np.ndarray:
        return self.model.predict(power_normalised(codes, self.mean)[0])

    def predict_proba(self, codes) -> np.ndarray:
        return self.model.predict_proba(power_normalised(codes, self.mean)[0])


class Propagation:
    """The neighbour graph of a collection's codes, built once; spread(labels) as often as labels change."""

    def __init__(self, codes, neighbours: int = NEIGHBOURS):
        import scipy.sparse as sp

        unit, self.mean = power_normalised(codes)
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
        self.features = unit

    def spread(self, labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
        """labels: (N,) class index, -1 where unknown -> (N, classes) spread scores after class mass normalisation,
        rows summing to 1 (uniform where no label reaches)."""
        labels = np.asarray(labels)
        n_classes = n_classes or int(labels.max()) + 1
        given = np.zeros((len(labels), n_classes), np.float32)
        known = np.flatnonzero(labels >= 0)
        given[known, labels[known]] = 1
        scores = given.copy()
        for _ in range(STEPS):
            scores = ALPHA * (self.graph @ scores) + (1 - ALPHA) * given
        scores /= np.maximum(scores.sum(0, keepdims=True), 1e-30)  # each class the same mass (none: stays 0)
        total = scores.sum(1, keepdims=True)
        return np.where(total > 0, scores / np.maximum(total, 1e-30), 1 / n_classes)

    def classifier(self, labels: np.ndarray, n_classes: int | None = None, c: float = C, seed: int = 0):
        """A logistic regression (scikit-learn; L2 strength c, on power-normalised codes) trained on the labelled
        images and up to FIT_ROWS others with their spread labels, weighted by that label's share of its row:
        (SpreadClassifier or None where fewer than two classes, spread scores)."""
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
        model = LogisticRegression(C=c, max_iter=500).fit(self.features[rows], guess[rows],
                                                          sample_weight=weight[rows])
        return SpreadClassifier(model, self.mean), scores
