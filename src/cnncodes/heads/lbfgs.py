"""Softmax regression fitted like scikit-learn's LogisticRegression(solver="lbfgs"), but over chunks of rows.

Same objective (mean weighted log-loss + |W|^2 / (2 C n), intercept not penalised), same solver (SciPy's
L-BFGS-B with scikit-learn's options), so the same model; the difference is that the codes are never one array:
each evaluation of the loss reads them chunk by chunk (keeping up to RESIDENT_BYTES of chunks in memory between
evaluations), so a million codes train in the memory of a few chunks. Standardisation is folded into the
weights instead of making a standardised copy.
"""
from __future__ import annotations

import numpy as np

from ..codes.matrix import chunk_rows, chunks
from .base import normalize_codes

RESIDENT_BYTES = 2 << 30  # chunks kept between loss evaluations; the rest is read again each time


def streamed_stats(blocks, normalize: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """(mean, std + 1e-6) of each feature of the normalised codes of all blocks, in one pass over their chunks."""
    total, squares, n = 0.0, 0.0, 0
    for x in blocks:
        for _, chunk in chunks(x):
            c = normalize_codes(chunk, normalize).astype(np.float64)
            total, squares, n = total + c.sum(0), squares + np.square(c).sum(0), n + len(c)
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean ** 2, 0))
    return mean.astype(np.float32), (std + 1e-6).astype(np.float32)


class _Rows:
    """The training rows of all blocks as chunks of normalised float32 tensors, with their labels and weights."""

    def __init__(self, blocks, labels, normalize: str, sample_weight_of_class: np.ndarray):
        self.parts, self.normalize, self.kept, self.cache = [], normalize, 0, {}
        for x, y in zip(blocks, labels):
            step = chunk_rows(x)
            self.parts += [(x, a, min(len(x), a + step), y[a:a + step]) for a in range(0, len(x), step)]
        self.weights = [sample_weight_of_class[y] for *_, y in self.parts]
        self.sw_sum = float(sum(w.sum() for w in self.weights))

    def __iter__(self):
        import torch

        for n, (x, a, b, y) in enumerate(self.parts):
            chunk = self.cache.get(n)
            if chunk is None:
                chunk = torch.from_numpy(np.ascontiguousarray(normalize_codes(x[a:b], self.normalize), np.float32))
                if self.kept + chunk.numel() * 4 <= RESIDENT_BYTES:
                    self.cache[n], self.kept = chunk, self.kept + chunk.numel() * 4
            yield chunk, torch.from_numpy(y), torch.from_numpy(self.weights[n])


def fit_softmax(blocks, labels, c: float, *, mean: np.ndarray, scale: np.ndarray, normalize: str = "none",
                class_weight: np.ndarray | None = None, init: tuple | None = None, max_iter: int = 1000,
                tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coef (K', D), intercept (K',), classes (K',)) over the classes present, in scikit-learn's layout, for
    codes standardised with mean and scale. blocks: arrays or CodeMatrix objects; labels: one array per block.
    class_weight: loss weight per class (index = label). init: (coef, intercept) to start from (warm start)."""
    import torch
    from scipy.optimize import minimize

    classes = np.unique(np.concatenate(labels))
    index = np.full(int(classes.max()) + 1, -1, np.int64)
    index[classes] = np.arange(len(classes))
    weight_of = np.ones(len(classes)) if class_weight is None else np.asarray(class_weight, np.float64)[classes]
    rows = _Rows(blocks, [index[np.asarray(y)] for y in labels], normalize, weight_of)
    k, d = len(classes), len(mean)
    if k == 2:
        c = c / 2  # scikit-learn fits two classes as one binomial vector; this multinomial pair is the same model
    inv_scale = torch.from_numpy(1.0 / scale.astype(np.float64))
    shift = torch.from_numpy(mean.astype(np.float64)) * inv_scale
    l2 = 1.0 / (c * rows.sw_sum)

    def loss_and_gradient(theta):
        w = torch.from_numpy(theta[:d * k].reshape(d, k))
        b = torch.from_numpy(theta[d * k:])
        w_raw = (w * inv_scale[:, None]).float()  # weights on the raw codes: no standardised copy of them
        b_raw = (b - shift @ w).float()
        loss, g_w, g_b = 0.0, torch.zeros(d, k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
        for x, y, sw in rows:
            logits = x @ w_raw + b_raw
            logp = torch.log_softmax(logits, 1)
            loss -= float((logp.gather(1, y[:, None])[:, 0].double() * sw).sum())
            g = logp.exp_()
            g[torch.arange(len(y)), y] -= 1
            g *= sw[:, None].float()
            g_w += (x.T @ g).double()
            g_b += g.sum(0).double()
        # chain rule from the raw-code weights back to the standardised ones
        g_w = g_w * inv_scale[:, None] - shift[:, None] * g_b[None, :]
        loss = loss / rows.sw_sum + 0.5 * l2 * float((w * w).sum())
        grad = torch.cat([(g_w / rows.sw_sum + l2 * w).reshape(-1), g_b / rows.sw_sum])
        return loss, grad.numpy()

    theta = np.zeros(d * k + k)
    if init is not None:
        theta[:d * k] = np.asarray(init[0], np.float64).T.reshape(-1)
        theta[d * k:] = init[1]
    result = minimize(loss_and_gradient, theta, method="L-BFGS-B", jac=True,
                      options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    coef = result.x[:d * k].reshape(d, k).T.astype(np.float32)
    return coef, result.x[d * k:].astype(np.float32), classes
