"""What every head shares: inputs checked once, code normalisation and standardisation, validation scored over
views (an image and its mirror image), early stopping, and probabilities from the decision function."""
from __future__ import annotations

import numpy as np

from ..errors import CnnCodesError

NORMALIZATIONS = ("none", "sqrt", "l2")
CLASS_WEIGHTS = ("none", "balanced")


def check_normalization(how: str) -> str:
    if how not in NORMALIZATIONS:
        raise CnnCodesError(f"--normalize must be one of {', '.join(NORMALIZATIONS)} (got {how!r})")
    return how


def check_class_weight(how: str) -> str:
    if how not in CLASS_WEIGHTS:
        raise CnnCodesError(f"--class-weight must be one of {', '.join(CLASS_WEIGHTS)} (got {how!r})")
    return how


def class_weights(y: np.ndarray, n_classes: int, how: str):
    """Loss weight per class: None, or for 'balanced' n / (classes * count), scikit-learn's rule, as a float32
    tensor (absent classes get 0: they have no examples to weigh)."""
    import torch

    if how == "none":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / ((counts > 0).sum() * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def normalize_codes(x: np.ndarray, how: str) -> np.ndarray:
    """Applied to codes before standardisation: sqrt (signed power 0.5) tames the heavy tails of pooled ReLU
    activations; l2 puts every image on the unit sphere."""
    x = np.asarray(x, np.float32)
    if check_normalization(how) == "sqrt":
        return np.sign(x) * np.sqrt(np.abs(x))
    if how == "l2":
        return unit_rows(x)
    return x


def fold_count(y: np.ndarray, most: int = 5) -> int:
    """Folds of a stratified cross-validation over labels y: at most `most`, at most the smallest class's images
    (below 2 there is nothing to cross-validate)."""
    counts = np.bincount(np.asarray(y))
    return int(min(most, counts[counts > 0].min()))


def in_shared_class(y: np.ndarray) -> np.ndarray:
    """(N,) bool: the images whose class has at least one other image (a class of one is often a mistyped label)."""
    y = np.asarray(y)
    return np.isin(y, np.flatnonzero(np.bincount(y) > 1))


def stratified_folds(y: np.ndarray, seed: int, most: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, held-out rows) of a stratified cross-validation over labels y, [] where no two classes have 2
    images. An image whose class has no other (a mistyped label, often) is in every fit and never held out: it must
    not switch cross-validation off, and every fit then knows every class (a log loss over all classes is defined).
    (heads/unknown.py holds such an image out once instead: there every image needs logits from a head without it.)"""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    shared = np.flatnonzero(in_shared_class(y))
    if len(np.unique(y[shared])) < 2:
        return []
    alone = np.setdiff1d(np.arange(len(y)), shared)
    folds = StratifiedKFold(fold_count(y[shared], most), shuffle=True, random_state=seed)
    return [(np.sort(np.concatenate([shared[fit], alone])), shared[held])
            for fit, held in folds.split(shared, y[shared])]


def cross_validated_scores(x: np.ndarray, y: np.ndarray, c_grid, folds: list, max_iter: int = 1000,
                           class_weight=None) -> list[dict]:
    """For each C of c_grid, ascending: {"C", "log_loss", "accuracy"}, means over `folds` (stratified_folds) of a
    standardised logistic regression; the log loss is over every class (a class of one image is in no held-out fold).
    What scikit-learn's LogisticRegressionCV does, written as its loop because that class's API is changing."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, make_scorer
    from sklearn.model_selection import cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scoring = {"log_loss": make_scorer(log_loss, response_method="predict_proba", greater_is_better=False,
                                       labels=np.unique(y)), "accuracy": "accuracy"}
    rows = []
    for c in sorted(c_grid):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, class_weight=class_weight))
        with warnings.catch_warnings():  # a fold that stops at max_iter still scores its C
            warnings.simplefilter("ignore")
            scores = cross_validate(model, x, y, cv=folds, scoring=scoring, error_score="raise")
        rows.append({"C": c, "log_loss": float(-scores["test_log_loss"].mean()),
                     "accuracy": float(scores["test_accuracy"].mean())})
    return rows


def unit_rows(x) -> np.ndarray:
    """Each row scaled to length 1 (cosine similarities are then dot products)."""
    x = np.asarray(x, np.float32)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def standardize(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(x - mean) / scale with one new array, not two: the codes of the large presets take gigabytes."""
    out = np.subtract(x, mean, dtype=np.float32)
    out /= scale
    return out


def scaler_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of each feature; the 1e-6 keeps constant features finite."""
    return x.mean(0), x.std(0) + 1e-6


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def as_views(x) -> list[np.ndarray]:
    """Validation codes as a list of views of the same images (one array, or [codes, flipped codes])."""
    return list(x) if isinstance(x, (list, tuple)) else [x]


def views_accuracy(proba_of, views: list[np.ndarray], y: np.ndarray) -> float:
    """Accuracy of the probabilities averaged over the views: the way the test split is predicted."""
    proba = sum(proba_of(v) for v in views) / len(views)
    return float((proba.argmax(1) == y).mean())


class EarlyStopping:
    """Keeps the best state by validation accuracy; says when `patience` epochs brought nothing better."""

    def __init__(self, patience: int):
        self.patience, self.best, self.state, self.waited = patience, -1.0, None, 0

    def update(self, accuracy: float, state) -> bool:
        """Record an epoch; True when training should stop."""
        if accuracy > self.best:
            self.best, self.state, self.waited = accuracy, state(), 0
        else:
            self.waited += 1
        return self.waited >= self.patience


class Head:
    """fit / decision_function / predict_proba / predict / score, scikit-learn style.

    Settings live in the constructor; learned state in attributes ending in '_' (validation_accuracy_: the
    validation accuracy of the model the head chose, trained on the training split only; None without validation).
    Subclasses write _fit(x, y, val_views, y_val), _logits(x), input_dim, state(), from_state() and
    torch_module() (codes -> logits as a PyTorch module: what `cnncodes export` puts in the ONNX graph). A head whose
    decision rests on features of its own (fine-tuning) overrides detector_features, detector_inputs and torch_parts.
    """

    mode = ""
    normalize = "none"
    validation_accuracy_ = None

    def fit(self, x_train, y_train, x_val=None, y_val=None, n_classes: int | None = None) -> "Head":
        """x_val may be one array or a list of views of the same images (their probabilities are averaged)."""
        y = np.asarray(y_train, np.int64)
        if len(y) == 0:
            raise CnnCodesError("no training images")
        if len(np.unique(y)) < 2:
            raise CnnCodesError("training data has a single class: a classifier needs at least two")
        self.n_classes_ = int(n_classes or y.max() + 1)
        views = None if x_val is None else [v for v in as_views(x_val) if len(v)]
        self.curve_, self.search_ = [], []
        self._fit(x_train, y, views or None, np.asarray(y_val, np.int64) if views else None)
        return self

    def check_input(self, x) -> None:
        if not hasattr(self, "n_classes_"):
            raise CnnCodesError("the head is not trained yet: call fit() first")
        if x.shape[1] != self.input_dim:
            raise CnnCodesError(f"codes have {x.shape[1]} features but the head takes {self.input_dim}: "
                                "the model does not match its backbone")

    def decision_function(self, x) -> np.ndarray:
        """Logits, computed chunk by chunk: codes on disk are read a chunk at a time."""
        from ..codes.matrix import chunks

        self.check_input(x)
        parts = [self._logits(c) for _, c in chunks(x)]
        return np.vstack(parts) if parts else self._logits(np.asarray(x))

    def detector_features(self, x) -> np.ndarray:
        """What the 'none of these' detector (unknown.py) measures distances between: the codes themselves, for a
        head on codes."""
        return x

    def detector_inputs(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(detector features, logits) of codes x, computed together."""
        return self.detector_features(x), self.decision_function(x)

    def torch_parts(self):
        """(codes -> detector features, codes -> logits) as PyTorch modules: the exported graph scores the unknown
        on both outputs."""
        import torch

        return torch.nn.Identity(), self.torch_module()

    def predict_proba(self, x) -> np.ndarray:
        return softmax(self.decision_function(x))

    def predict(self, x) -> np.ndarray:
        return self.decision_function(x).argmax(1)

    def score(self, x, y) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())

    # the standardised input of the softmax and MLP heads
    def _standardized(self, x) -> np.ndarray:
        return standardize(normalize_codes(x, self.normalize), self.mean_, self.scale_)
