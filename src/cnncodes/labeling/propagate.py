"""Labels spread over the graph of each code's nearest neighbours (Zhou et al., NIPS 2003, "Learning with local and
global consistency"), then a softmax head trained on every image with its spread label, weighted by how sure the
spreading is. With few labels this uses the structure of all the codes, labelled or not.

Both work on power-normalised codes (the signed square root of each activation, centred, unit length: Perronnin et
al., ECCV 2010), with the classifier's C = 10, and before an image takes its best class the spread scores get class
mass normalisation (Zhu et al., ICML 2003) with each class's mass set to its share of the labels (smoothed): the many
labels of one class do not flood a neighbouring class, and a rare class stays rare. Chosen on the validation split of
the official CIFAR-10 archive's Lite0 codes (`python benchmarks/few_labels.py --ablation`, docs/benchmarks.md):
summed over the budgets from 10 to 1,000 labels it scored above no normalisation (most at 20 labels; a little
below it at 50 and 100), and above unit-length codes with C = 1 at every budget. The same mass for every class
(prior="equal") scored higher still on CIFAR-10, which is balanced, but 8 to 10 points lower on a long-tailed
collection (`--long-tail 0.7`): it floods the large classes with the small ones.

Several networks' codes side by side (`a+b`) are compared network by network (`parts`): each network's final code
normalised on its own, every network at the same weight, mid-level codes (layers=multi) left out. On CIFAR-10,
multi-layer Lite0, Lite1 and Lite2 codes compared so spread 10 labels to 86.3% test accuracy, against 76.1% with
Lite0's codes alone (docs/benchmarks.md, "Few labels"; `benchmarks/few_labels.py --whole-codes` compares them as
one vector).

Written here rather than taken from scikit-learn: its LabelSpreading builds the neighbour graph itself with a
brute-force search over the raw codes for every fit, while here the graph is built once per collection (the
labels change after every page of the labelling tool; the codes do not)."""
from __future__ import annotations

import numpy as np

from ..codes.view import self_similarity_blocks
from ..heads.base import normalize_codes, unit_rows

NEIGHBOURS = 10  # fewer neighbours keep the spreading inside a class; 20 scored lower on validation at 100 labels
C = 10.0  # the classifier's inverse L2 strength (1 and 100 scored lower on validation at 100 and 1,000 labels)
PRIORS = ("labels", "equal", "none")  # each class's spread mass: its share of the labels, the same for all, as spread
ALPHA = 0.99  # how much a node listens to its neighbours rather than to its own label
STEPS = 20
CHUNK = 4096
FIT_ROWS = 20_000  # unlabelled images the classifier learns from (a seeded draw): time stays flat as collections grow


def power_normalised(codes, mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(signed square roots of the codes, centred on `mean` (theirs when None) and at unit length; that mean)."""
    root = normalize_codes(codes, "sqrt")
    mean = root.mean(0) if mean is None else mean
    root -= mean
    root /= np.linalg.norm(root, axis=1, keepdims=True) + 1e-12
    return root, mean


class SpreadClassifier:
    """A logistic regression on the codes as the graph saw them: predict and predict_proba take the codes as
    extracted. classes_ holds the classes some image was given or spread to (predict_proba's columns)."""

    def __init__(self, model, features):
        self.model, self.features = model, features
        self.classes_ = model.classes_

    def predict(self, codes) -> np.ndarray:
        return self.model.predict(self.features(codes))

    def predict_proba(self, codes) -> np.ndarray:
        return self.model.predict_proba(self.features(codes))


class Propagation:
    """The neighbour graph of a collection's codes, built once; spread(labels) as often as labels change."""

    def __init__(self, codes, neighbours: int = NEIGHBOURS, power: bool = True, parts: list[slice] | None = None):
        """parts: the columns compared, a slice per network (backbones.final_code_columns): each part is
        power-normalised on its own and weighs the same; None: all columns as one. power=False: plain unit-length
        codes (for comparison: benchmarks/few_labels.py --ablation)."""
        import scipy.sparse as sp

        self.codes, self.power, self.parts = codes, power, parts or [slice(None)]
        unit, self.means = self._compared(codes, None) if power else (unit_rows(codes), None)
        n = len(unit)
        k = max(1, min(neighbours, n - 1))
        rows, cols, weights = [], [], []
        for start, similarity in self_similarity_blocks(unit, CHUNK):
            nearest_similarity, nearest = similarity.topk(k, dim=1)
            rows.append(np.repeat(np.arange(start, start + len(nearest)), k))
            cols.append(nearest.numpy().ravel())
            weights.append(np.maximum(nearest_similarity.numpy().ravel(), 0) ** 3)
        graph = sp.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        graph = graph + graph.T
        degree = np.asarray(graph.sum(1)).ravel()
        scale = sp.diags(1 / np.sqrt(degree + 1e-12))
        self.graph = (scale @ graph @ scale).tocsr()

    def features(self, codes) -> np.ndarray:
        """Codes as the graph compares them (new codes are centred on this collection's means)."""
        return self._compared(codes, self.means)[0] if self.power else unit_rows(codes)

    def _compared(self, codes, means: list | None) -> tuple[np.ndarray, list]:
        """(the parts power-normalised, side by side at the same weight; each part's mean, theirs where None)."""
        codes = np.asarray(codes)
        done = [power_normalised(codes[:, part], None if means is None else means[i])
                for i, part in enumerate(self.parts)]
        if len(done) == 1:
            return done[0][0], [done[0][1]]
        return np.hstack([unit for unit, _ in done]) / np.sqrt(len(done)), [mean for _, mean in done]

    def spread(self, labels: np.ndarray, n_classes: int | None = None, prior: str = "labels") -> np.ndarray:
        """labels: (N,) class index, -1 where unknown -> (N, classes) spread scores after class mass normalisation
        by `prior` (one of PRIORS; "none": none), rows summing to 1 (uniform where no label reaches)."""
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, not {prior!r}")
        labels = np.asarray(labels)
        n_classes = n_classes or int(labels.max()) + 1
        given = np.zeros((len(labels), n_classes), np.float32)
        known = np.flatnonzero(labels >= 0)
        given[known, labels[known]] = 1
        scores = given.copy()
        for _ in range(STEPS):
            scores = ALPHA * (self.graph @ scores) + (1 - ALPHA) * given
        if prior != "none":
            mass = np.bincount(labels[known], minlength=n_classes) + 1.0 if prior == "labels" else np.ones(n_classes)
            scores *= (mass / mass.sum()) / np.maximum(scores.sum(0), 1e-30)  # a class no label reached stays 0
        total = scores.sum(1, keepdims=True)
        return np.where(total > 0, scores / np.maximum(total, 1e-30), 1 / n_classes)

    def classifier(self, labels: np.ndarray, n_classes: int | None = None, c: float = C, seed: int = 0,
                   prior: str = "labels"):
        """A logistic regression (scikit-learn; inverse L2 strength c, on the codes as the graph saw them) trained
        on the labelled images and up to FIT_ROWS others with their spread labels, weighted by that label's share
        of its row: (SpreadClassifier or None where fewer than two classes, spread scores)."""
        from sklearn.linear_model import LogisticRegression

        scores = self.spread(labels, n_classes, prior)
        labels = np.asarray(labels)
        guess, weight = scores.argmax(1), scores.max(1)
        guess[labels >= 0], weight[labels >= 0] = labels[labels >= 0], 1
        others = np.flatnonzero(labels < 0)
        if len(others) > FIT_ROWS:
            others = np.random.default_rng(seed).choice(others, FIT_ROWS, replace=False)
        rows = np.sort(np.concatenate([np.flatnonzero(labels >= 0), others]))
        if len(np.unique(guess[rows])) < 2:
            return None, scores
        x = self.features(np.asarray(self.codes)[rows])
        model = LogisticRegression(C=c, max_iter=500).fit(x, guess[rows], sample_weight=weight[rows])
        return SpreadClassifier(model, self.features), scores
