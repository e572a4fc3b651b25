"""t-SNE maps of CNN codes with openTSNE (FFT-accelerated, O(N)): seconds where exact t-SNE took hours."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..codes.view import Codes
from ..files import atomic_write, npz_bytes


# A fifth of openTSNE's default iterations (250 exaggerated + 500). Half of them kept the map's class separation
# (2-D kNN accuracy 0.672 against 0.671, 10,000 Inception codes) in half the time (benchmarks/tsne_speed.py);
# 60 + 150 against 125 + 250 on Lite0 validation codes: 0.828 against 0.829 on 9,000 (14.2 s against 22.3 s), 0.825
# against 0.823 on 4,500 (6.5 s against 10.6 s) (`benchmarks/tsne_speed.py --codes C --n N --iterations
# 125/250,60/150 --ours-only`).
EARLY_EXAGGERATION_ITER, N_ITER = 60, 150


def embed(x: np.ndarray, seed: int = 0, n_jobs: int = -1, pca_dim: int = 50) -> np.ndarray:
    """2-D embedding: PCA to pca_dim (denoises and speeds the neighbour search), then openTSNE (FFT gradients)."""
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    x = np.asarray(x, np.float32)
    if x.shape[1] > pca_dim and len(x) > pca_dim:
        x = PCA(pca_dim, random_state=seed).fit_transform(x)
    perplexity = min(30.0, (len(x) - 1) / 3.0)  # openTSNE's largest for few points (it says so when given more)
    tsne = TSNE(perplexity=perplexity, n_jobs=n_jobs, random_state=seed, verbose=False,
                early_exaggeration_iter=EARLY_EXAGGERATION_ITER, n_iter=N_ITER)
    return np.asarray(tsne.fit(x))


def knn_accuracy(embedding: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Class separation of a map: leave-one-out k-nearest-neighbour accuracy in 2-D."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(k + 1).fit(embedding, labels)
    neighbours = knn.kneighbors(embedding, return_distance=False)[:, 1:]
    votes = labels[neighbours]
    pred = np.array([np.bincount(v).argmax() for v in votes])
    return float((pred == labels).mean())


def select(codes: Codes, split: str, sample: int, seed: int) -> np.ndarray:
    """Indices of the codes to map: one split (or all), at most `sample`, drawn with a fixed seed."""
    idx = np.arange(len(codes.ids)) if split == "all" else np.flatnonzero(codes.splits == split)
    if len(idx) > sample:
        idx = np.sort(np.random.default_rng(seed).choice(idx, sample, replace=False))
    return idx


def thumbnail_cells(emb: np.ndarray, grid: int = 40, seed: int = 0) -> np.ndarray:
    """Which point shows its image in each cell of a grid x grid raster over the map: rows (index, row, column)."""
    lo, hi = emb.min(0), emb.max(0)
    pos = ((emb - lo) / np.maximum(hi - lo, 1e-9) * (grid - 1)).round().astype(int)
    cells, taken = [], set()
    for n in np.random.default_rng(seed).permutation(len(emb)):
        key = (grid - 1 - pos[n, 1], pos[n, 0])
        if key not in taken:
            taken.add(key)
            cells.append((n, *key))
    return np.array(cells, dtype=np.int64).reshape(-1, 3)


def tsne_map(codes: Codes, out: Path, split: str = "test", sample: int = 10000, seed: int = 0) -> Path:
    """Embed, save tsne.npz (embedding, ids, labels) and draw tsne.png: `cnncodes tsne` for any codes."""
    from . import plots

    idx = select(codes, split, sample, seed)
    if len(idx) < 5:
        from ..errors import CnnCodesError

        raise CnnCodesError(f"only {len(idx)} codes in split {split!r}: too few for a t-SNE map")
    emb = embed(codes.vectors[idx], seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "tsne.npz", npz_bytes(embedding=emb.astype(np.float32), ids=codes.ids[idx].astype(str),
                                             labels=codes.labels[idx]))
    plots.tsne_scatter(emb, codes.labels[idx], codes.class_names, out / "tsne.png")
    return out / "tsne.png"
