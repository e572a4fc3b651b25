"""The softmax (multinomial logistic) regression trained on CNN codes, in two modes.

tuned: standardised codes, L-BFGS, L2 strength chosen on the validation split, then refit on train+validation.
sgd:   the original experiment's protocol: raw codes, plain SGD, learning rate 0.01, batches of 10, one epoch,
       with train and validation accuracy recorded every `eval_every` steps (the learning curve).
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import CnnCodesError
from .base import (Head, check_class_weight, check_normalization, class_weights, cross_validated_scores,
                   normalize_codes, scaler_stats, softmax, standardize, stratified_folds, views_accuracy)

DEFAULT_C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
SEARCH_MIN_ROWS, SEARCH_ROWS_PER_FEATURE = 10_000, 4
SMALL_VALIDATION = 100  # below this many validation images, C is cross-validated over train + validation


def search_sample_size(n_rows: int, n_features: int) -> int:
    """Training rows the C search fits on: max(10,000, 4 per feature), all rows when there are fewer.

    C (the weight of the summed loss) carries over from the sample to the refit on all rows; with fewer than
    about 4 rows per feature every C separates the sample perfectly and the search picks by noise."""
    return min(n_rows, max(SEARCH_MIN_ROWS, SEARCH_ROWS_PER_FEATURE * n_features))


def _quiet_fit(model, x, y) -> None:
    """Fit a scikit-learn model; stopping at max_iter before full convergence is expected here, not news."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)


class SoftmaxHead(Head):
    def __init__(self, mode: str = "tuned", c_grid=DEFAULT_C_GRID, learning_rate: float = 0.01, batch_size: int = 10,
                 epochs: int = 1, eval_every: int = 100, seed: int = 0, max_iter: int = 1000, normalize: str = "none",
                 search_samples: int | None = None, class_weight: str = "none", progress: bool = False):
        if mode not in ("tuned", "sgd"):
            raise CnnCodesError(f"--head must be tuned, sgd or mlp (got {mode!r})")
        self.normalize = check_normalization(normalize)  # rejects an unknown choice now, not after extraction
        self.mode, self.c_grid, self.learning_rate, self.batch_size = mode, tuple(c_grid), learning_rate, batch_size
        self.epochs, self.eval_every, self.seed, self.max_iter = epochs, eval_every, seed, max_iter
        self.search_samples, self.progress = search_samples, progress
        self.class_weight = check_class_weight(class_weight)

    # learned: mean_, scale_, coef_ (D, K), intercept_ (K,), curve_ (sgd), search_ and best_c_ (tuned)

    def _fit(self, x, y, val, y_val):
        if self.mode == "sgd":
            self._fit_sgd(normalize_codes(x, self.normalize), y,
                          None if val is None else [normalize_codes(v, self.normalize) for v in val], y_val)
        else:
            self._fit_tuned(x, y, val, y_val)

    def _fit_tuned(self, x, y, val, y_val):
        """C is chosen by scikit-learn on a sample held in memory; every fit on all rows streams them
        (heads/lbfgs.py: the same objective and solver), starting from the sample's solution."""
        from sklearn.linear_model import LogisticRegression
        from tqdm import tqdm

        best_c, start = self.c_grid[len(self.c_grid) // 2], None
        blocks, labels = [x], [y]
        self.selection_ = ("none: one C given" if len(self.c_grid) == 1 else "validation split" if val is not None
                           else "none: no validation split (C is the grid's middle)")
        if val is not None and len(self.c_grid) > 1 and len(val) == 1 and len(y_val) < SMALL_VALIDATION:
            best_c = self._cross_validated_c([x, *val], [y, y_val])
            blocks, labels = [x, *val], [y, y_val]
            val = None  # chosen: the refit below uses every labelled row
        if val is not None and len(self.c_grid) > 1:
            n = min(len(x), self.search_samples) if self.search_samples else search_sample_size(*x.shape)
            self.search_rows_ = n
            pick = np.sort(np.random.default_rng(self.seed).choice(len(x), n, replace=False)) if n < len(x) else None
            xp = normalize_codes(x if pick is None else x[pick], self.normalize)
            yp = y if pick is None else y[pick]
            mean, scale = scaler_stats(xp)
            xs = standardize(xp, mean, scale)
            del xp
            vs = [standardize(normalize_codes(v, self.normalize), mean, scale) for v in val]
            model = LogisticRegression(max_iter=self.max_iter, warm_start=True, class_weight=self._sklearn_weight())
            fitted = {}
            for c in tqdm(sorted(self.c_grid), desc="head: choosing C", disable=None if self.progress else True, leave=False):
                _quiet_fit(model.set_params(C=c), xs, yp)
                fitted[c] = (model.coef_.copy(), model.intercept_.copy())
                self.search_.append({"C": c, "validation_accuracy": views_accuracy(model.predict_proba, vs, y_val),
                                     "train_accuracy": float(model.score(xs, yp))})
            del xs, vs
            best = max(self.search_, key=lambda r: r["validation_accuracy"])
            best_c, self.validation_accuracy_ = best["C"], best["validation_accuracy"]
            start = (*fitted[best_c], model.classes_, mean, scale)
            if pick is not None:  # the chosen C on all training rows: the validation score comparable across heads
                self._fit_linear([x], [y], best_c, start)
                self.validation_accuracy_ = views_accuracy(self.predict_proba, val, y_val)
                start = None  # the refit below starts from this fit
            blocks, labels = [x, *val], [y] + [y_val] * len(val)
        self.best_c_ = best_c
        if self.progress:
            print(f"head: refitting with C={best_c:g} on {sum(len(b) for b in blocks):,} rows", flush=True)
        self._fit_linear(blocks, labels, best_c, start)

    def _cross_validated_c(self, blocks, labels) -> float:
        """C by stratified k-fold log-loss over train + validation (scikit-learn's LogisticRegressionCV, as a loop):
        a validation split of a few images ties most Cs on accuracy and picks by chance. search_ records each C's
        cross-validated accuracy, validation_accuracy_ the chosen one's."""
        xa = normalize_codes(np.vstack([np.asarray(b) for b in blocks]), self.normalize)
        ya = np.concatenate(labels)
        cv = stratified_folds(ya, self.seed)
        if not cv:
            self.selection_ = ("none: no two classes have two labelled images to cross-validate on (C is the "
                               "grid's middle)")
            return self.c_grid[len(self.c_grid) // 2]
        alone = len(ya) - sum(len(held) for _, held in cv)
        self.selection_ = f"{len(cv)}-fold cross-validation over train + validation (the validation split is small)" + (
            f"; {alone} image{'s' * (alone > 1)} whose class has no other stayed in training" if alone else "")
        for row in cross_validated_scores(xa, ya, self.c_grid, cv, self.max_iter, self._sklearn_weight()):
            self.search_.append({"C": row["C"], "validation_accuracy": row["accuracy"], "log_loss": row["log_loss"]})
        best = min(self.search_, key=lambda r: r["log_loss"])
        self.validation_accuracy_ = best["validation_accuracy"]
        return best["C"]

    def _fit_linear(self, blocks, labels, c: float, start=None) -> None:
        """Standardisation and weights from all rows of the blocks, read chunk by chunk, starting from `start`
        (a scikit-learn fit: coef, intercept, classes and the mean and scale it was fitted under) or else from
        the weights this head already holds; either is rewritten for the new standardisation."""
        from .lbfgs import fit_softmax, streamed_stats

        mean, scale = streamed_stats(blocks, self.normalize)
        classes = np.unique(np.concatenate(labels))
        if start is None and hasattr(self, "coef_"):
            start = (self.coef_[:, classes].T, self.intercept_[classes], classes, self.mean_, self.scale_)
        init = None
        if start is not None and np.array_equal(start[2], classes):
            coef, intercept, _, m0, s0 = start
            if coef.shape[0] == 1:  # scikit-learn's binary form
                coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
            init = (coef * (scale / s0), intercept + coef @ ((mean - m0) / s0))
        weight = class_weights(np.concatenate(labels), self.n_classes_, self.class_weight)
        coef, intercept, classes = fit_softmax(blocks, labels, c, mean=mean, scale=scale, normalize=self.normalize,
                                               class_weight=None if weight is None else weight.numpy(), init=init,
                                               max_iter=self.max_iter)
        self.mean_, self.scale_ = mean, scale
        self._set_linear(coef, intercept, classes)

    def _sklearn_weight(self):
        return "balanced" if self.class_weight == "balanced" else None

    def _set_linear(self, coef, intercept, classes):
        """Store as (D, K) over all n_classes_, even when a class is absent from the training data."""
        self.coef_ = np.zeros((coef.shape[1], self.n_classes_), np.float32)
        self.intercept_ = np.full(self.n_classes_, -1e9 if len(classes) < self.n_classes_ else 0, np.float32)
        if coef.shape[0] == 1:  # scikit-learn's binary form: one vector for class 1
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_[:, classes] = coef.T
        self.intercept_[classes] = intercept

    def _fit_sgd(self, x, y, val, y_val):
        import torch

        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        self.mean_, self.scale_ = np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32)
        linear = torch.nn.Linear(x.shape[1], self.n_classes_)
        torch.nn.init.trunc_normal_(linear.weight, std=0.001, generator=gen)  # as the original: truncated normal
        torch.nn.init.zeros_(linear.bias)
        opt = torch.optim.SGD(linear.parameters(), lr=self.learning_rate)
        weight = class_weights(y, self.n_classes_, self.class_weight)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        probe = rng.choice(len(x), size=min(len(x), 2000), replace=False)
        step = 0

        def proba_of(v):
            return softmax(linear(torch.from_numpy(v)).numpy())

        def record():
            with torch.no_grad():
                row = {"step": step, "train_accuracy": float((linear(xt[probe]).argmax(1) == yt[probe]).float().mean())}
                if val is not None:
                    row["validation_accuracy"] = views_accuracy(proba_of, val, y_val)
            self.curve_.append(row)

        record()
        for _ in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(x)))
            for start in range(0, len(x), self.batch_size):
                idx = order[start:start + self.batch_size]
                loss = torch.nn.functional.cross_entropy(linear(xt[idx]), yt[idx], weight=weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step % self.eval_every == 0:
                    record()
        if self.curve_[-1]["step"] != step:
            record()
        self.coef_ = linear.weight.detach().numpy().T.copy()
        self.intercept_ = linear.bias.detach().numpy().copy()
        self.validation_accuracy_ = self.curve_[-1].get("validation_accuracy")

    def _logits(self, x) -> np.ndarray:
        return self._standardized(x) @ self.coef_ + self.intercept_

    def position_terms(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P, K) logit terms of a feature map's P positions (rows of its features) and the (K,) bias: with plain
        codes (the mean of the map) their mean plus the bias is the logits (explain.py)."""
        return self._standardized(rows) @ self.coef_, self.intercept_

    @property
    def input_dim(self) -> int:
        return self.coef_.shape[0]

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": self.intercept_}

    def torch_module(self):
        from .modules import standardized_network

        return standardized_network(self.normalize, self.mean_, self.scale_, self.coef_, self.intercept_)

    @classmethod
    def from_state(cls, state: dict, mode: str = "tuned", normalize: str = "none") -> "SoftmaxHead":
        head = cls(mode=mode, normalize=normalize)
        head.mean_, head.scale_, head.coef_, head.intercept_ = (np.asarray(state[k], np.float32)
                                                                for k in ("mean", "scale", "coef", "intercept"))
        head.n_classes_ = head.coef_.shape[1]
        return head
