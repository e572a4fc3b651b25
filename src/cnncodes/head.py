"""The softmax (multinomial logistic) regression trained on CNN codes, in two modes.

tuned: standardised codes, L-BFGS, L2 strength chosen on the validation split, then refit on train+validation.
sgd:   the original experiment's protocol: raw codes, plain SGD, learning rate 0.01, batches of 10, one epoch,
       with train and validation accuracy recorded every `eval_every` steps (the learning curve).
"""
from __future__ import annotations

import warnings

import numpy as np

from .errors import CnnCodesError

DEFAULT_C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
NORMALIZATIONS = ("none", "sqrt", "l2")
SEARCH_SAMPLES_PER_FEATURE = 4


def normalize_codes(x: np.ndarray, how: str) -> np.ndarray:
    """Applied to codes before standardisation: sqrt (signed power 0.5) tames the heavy tails of pooled ReLU
    activations; l2 puts every image on the unit sphere."""
    x = np.asarray(x, np.float32)
    if how == "sqrt":
        return np.sign(x) * np.sqrt(np.abs(x))
    if how == "l2":
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    if how != "none":
        raise CnnCodesError(f"--normalize must be one of {', '.join(NORMALIZATIONS)} (got {how!r})")
    return x


def standardize(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(x - mean) / scale with one new array, not two: the codes of the large presets take gigabytes."""
    out = np.subtract(x, mean, dtype=np.float32)
    out /= scale
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ClassifierHead:
    """What every head shares: probabilities, labels and accuracy from its decision_function."""

    def decision_function(self, x) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, x) -> np.ndarray:
        return softmax(self.decision_function(x))

    def predict(self, x) -> np.ndarray:
        return self.decision_function(x).argmax(1)

    def score(self, x, y) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())


class SoftmaxHead(ClassifierHead):
    """fit / predict_proba / predict / score, scikit-learn style; learned state ends in '_'."""

    def __init__(self, mode: str = "tuned", c_grid=DEFAULT_C_GRID, learning_rate: float = 0.01, batch_size: int = 10,
                 epochs: int = 1, eval_every: int = 100, seed: int = 0, max_iter: int = 1000, normalize: str = "none",
                 search_samples: int | None = None, progress: bool = False):
        if mode not in ("tuned", "sgd"):
            raise CnnCodesError(f"--head must be tuned, sgd or mlp (got {mode!r})")
        normalize_codes(np.zeros((1, 1)), normalize)  # rejects an unknown choice now, not after extraction
        self.normalize = normalize
        self.mode, self.c_grid, self.learning_rate, self.batch_size = mode, tuple(c_grid), learning_rate, batch_size
        self.epochs, self.eval_every, self.seed, self.max_iter = epochs, eval_every, seed, max_iter
        self.search_samples, self.progress = search_samples, progress

    # learned: mean_, scale_, coef_ (D, K), intercept_ (K,), n_classes_, curve_ (list of dicts), search_ (list)

    def fit(self, x_train, y_train, x_val=None, y_val=None, n_classes: int | None = None) -> "SoftmaxHead":
        x_train, y_train = normalize_codes(x_train, self.normalize), np.asarray(y_train, np.int64)
        x_val = None if x_val is None else normalize_codes(x_val, self.normalize)
        if len(x_train) == 0:
            raise CnnCodesError("no training images")
        self.n_classes_ = int(n_classes or y_train.max() + 1)
        if len(np.unique(y_train)) < 2:
            raise CnnCodesError("training data has a single class: a classifier needs at least two")
        has_val = x_val is not None and len(x_val) > 0
        if self.mode == "sgd":
            self._fit_sgd(x_train, y_train, x_val if has_val else None, y_val if has_val else None)
        else:
            self._fit_tuned(x_train, y_train, x_val if has_val else None, y_val if has_val else None)
        return self

    def _fit_tuned(self, x, y, x_val, y_val):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        self.search_ = []
        best_c = self.c_grid[len(self.c_grid) // 2]
        if x_val is not None and len(self.c_grid) > 1:
            # The search fits on a sample of the training images (C, the weight of the summed loss, carries over
            # to the full refit); the refit uses everything. The sample needs several images per feature: with
            # fewer, every C separates it perfectly and the search picks by noise (concatenated codes).
            n = self.search_samples or max(10000, SEARCH_SAMPLES_PER_FEATURE * x.shape[1])
            pick = np.arange(len(x))
            if len(x) > n:
                pick = np.sort(np.random.default_rng(self.seed).choice(len(x), n, replace=False))
            xp, yp = x[pick], y[pick]
            mean, scale = xp.mean(0), xp.std(0) + 1e-6
            xs, xvs = standardize(xp, mean, scale), standardize(x_val, mean, scale)
            model = LogisticRegression(max_iter=self.max_iter, warm_start=True)
            from tqdm import tqdm

            for c in tqdm(sorted(self.c_grid), desc="head: choosing C", disable=not self.progress, leave=False):
                model.set_params(C=c)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(xs, yp)
                self.search_.append({"C": c, "validation_accuracy": float(model.score(xvs, y_val)),
                                     "train_accuracy": float(model.score(xs, yp))})
            best_c = max(self.search_, key=lambda r: r["validation_accuracy"])["C"]
            x, y = np.vstack([x, x_val]), np.concatenate([y, y_val])
        self.best_c_ = best_c
        if self.progress:
            print(f"head: refitting with C={best_c:g} on {len(x):,} images", flush=True)
        self.mean_, self.scale_ = x.mean(0), x.std(0) + 1e-6
        model = LogisticRegression(C=best_c, max_iter=self.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(standardize(x, self.mean_, self.scale_), y)
        self._set_linear(model.coef_, model.intercept_, model.classes_)
        self.curve_ = []

    def _set_linear(self, coef, intercept, classes):
        """Store as (D, K) over all n_classes_, even when a class is absent from the training data."""
        self.coef_ = np.zeros((coef.shape[1], self.n_classes_), np.float32)
        self.intercept_ = np.full(self.n_classes_, -1e9 if len(classes) < self.n_classes_ else 0, np.float32)
        if coef.shape[0] == 1:  # scikit-learn's binary form: one vector for class 1
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_[:, classes] = coef.T
        self.intercept_[classes] = intercept

    def _fit_sgd(self, x, y, x_val, y_val):
        import torch

        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        self.mean_, self.scale_ = np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32)
        linear = torch.nn.Linear(x.shape[1], self.n_classes_)
        torch.nn.init.trunc_normal_(linear.weight, std=0.001, generator=gen)  # as the original: truncated normal
        torch.nn.init.zeros_(linear.bias)
        opt = torch.optim.SGD(linear.parameters(), lr=self.learning_rate)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        probe = rng.choice(len(x), size=min(len(x), 2000), replace=False)
        self.curve_, step = [], 0

        def record():
            with torch.no_grad():
                row = {"step": step, "train_accuracy": float((linear(xt[probe]).argmax(1) == yt[probe]).float().mean())}
                if x_val is not None:
                    row["validation_accuracy"] = float((linear(torch.from_numpy(x_val)).argmax(1).numpy() == y_val).mean())
            self.curve_.append(row)

        record()
        for _ in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(x)))
            for start in range(0, len(x), self.batch_size):
                idx = order[start:start + self.batch_size]
                loss = torch.nn.functional.cross_entropy(linear(xt[idx]), yt[idx])
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
        self.search_ = []

    def decision_function(self, x) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise CnnCodesError("the head is not trained yet: call fit() first")
        x = normalize_codes(x, self.normalize)
        if x.shape[1] != self.input_dim:
            raise CnnCodesError(f"codes have {x.shape[1]} features but the head was trained on {self.input_dim}")
        return standardize(x, self.mean_, self.scale_) @ self.coef_ + self.intercept_

    @property
    def input_dim(self) -> int:
        return self.coef_.shape[0]

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": self.intercept_}

    @classmethod
    def from_state(cls, state: dict, mode: str = "tuned", normalize: str = "none") -> "SoftmaxHead":
        head = cls(mode=mode, normalize=normalize)
        head.mean_, head.scale_, head.coef_, head.intercept_ = (np.asarray(state[k], np.float32)
                                                                for k in ("mean", "scale", "coef", "intercept"))
        head.n_classes_ = head.coef_.shape[1]
        return head
