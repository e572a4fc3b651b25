"""What the report draws, computed once by the run and written to its folder (the report itself computes nothing):

    tsne.npz             2-D embedding of the test codes (ids, labels)
    data_efficiency.json test accuracy of tuned heads trained on 100, 1,000, 10,000 and all training images (not for
                         a fine-tuned run: its network saw every training label)
    thumbnails.npz       small copies of the images the pictures show (samples, mistakes, t-SNE map cells)
    samples.json         the ids of the sample grid, per class
    mistake_maps.npz     activation maps over the mistakes, where the model has them (written by explain.py)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..codes.matrix import take
from ..codes.view import Codes
from ..files import atomic_write, npz_bytes, write_json
from .tsne import embed, select, thumbnail_cells

FILES = ["tsne.npz", "data_efficiency.json", "thumbnails.npz", "samples.json", "mistake_maps.npz"]
DATA_EFFICIENCY_C = 0.01  # for runs whose head chose no C (sgd, mlp): the middle of the tuned head's grid
MAP_CELL, PICTURE = 32, 96  # pixels: an image in a cell of the t-SNE image map; in the sample and mistake grids
# 5,000 test codes on the map: about twice as fast as 9,000 for a map nearly as clear (2-D 10-neighbour accuracy
# 0.825 on 4,500 validation codes against 0.828 on 9,000; tsne.py)
SAMPLES_PER_CLASS, SAMPLE_CLASSES, MISTAKES, TSNE_POINTS = 8, 20, 18, 5000
HOVER_POINTS = 2000  # points of the interactive map, each carrying its image into report.html (about 1.5 kB each)


def data_efficiency(codes: Codes, best_c: float, seed: int, full_accuracy: float | None = None) -> dict:
    """Test accuracy of tuned heads trained on 100, 1,000, 10,000 and all images (fixed C: it is a curve).
    full_accuracy: the run's own test accuracy where its head is that last fit already (tuned, on these codes
    alone): the largest fit of the curve is not made twice."""
    from ..heads import SoftmaxHead

    x, y = codes.part("train", "validation")
    xt, yt = codes.part("test")
    rng = np.random.default_rng(seed)
    sizes, accs = [], []
    for size in (100, 1000, 10000, len(x)):
        if size > len(x) or (size < len(x) and size in sizes):
            continue
        sizes.append(size)
        if size == len(x) and full_accuracy is not None:
            accs.append(full_accuracy)
            continue
        pick = rng.choice(len(x), size, replace=False) if size < len(x) else np.arange(len(x))
        head = SoftmaxHead("tuned", c_grid=(best_c,)).fit(take(x, pick), y[pick], n_classes=len(codes.class_names))
        accs.append(head.score(xt, yt))
    return {"C": best_c, "sizes": sizes, "test_accuracy": accs}


def thumbnails(dataset, ids: list[str], size: int) -> np.ndarray:
    from ..data.images import square_thumbnail

    index = dataset.row_of()
    out = np.zeros((len(ids), size, size, 3), np.uint8)
    for n, item_id in enumerate(ids):
        out[n] = square_thumbnail(dataset.read(index[item_id], size), size)
    return out


def mistakes(labels: np.ndarray, proba: np.ndarray, n: int = MISTAKES) -> np.ndarray:
    """Positions of the most confidently misclassified test images."""
    pred = proba.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    return wrong[np.argsort(-proba[wrong, pred[wrong]])][:n]


def write_report_data(out: Path, dataset, codes: Codes, proba: np.ndarray, best_c: float | None, seed: int,
                      progress: bool = True, full_accuracy: float | None = None, features=None,
                      curve: bool = True) -> None:
    """codes: the run's codes; proba: test probabilities; full_accuracy: see data_efficiency.
    features: rows of codes -> what the head saw, where that is not the codes (a fine-tuned head's pooled features),
    computed for the mapped rows only. curve: the curve of accuracy against training set size (data_efficiency)."""
    rng = np.random.default_rng(seed)
    shown, map_ids, hover_ids = set(), [], []
    train = codes.splits == "train"
    samples = {}
    classes = np.arange(len(codes.class_names))
    if len(classes) > SAMPLE_CLASSES:  # a readable grid: a seeded draw of the classes
        classes = np.sort(rng.choice(classes, SAMPLE_CLASSES, replace=False))
    for k in classes:
        name = codes.class_names[k]
        ids = codes.ids[train & (codes.labels == k)]
        samples[name] = [str(i) for i in rng.choice(ids, min(SAMPLES_PER_CLASS, len(ids)), replace=False)]
        shown.update(samples[name])
    test_ids = codes.ids[codes.splits == "test"]
    shown.update(str(i) for i in test_ids[mistakes(codes.labels[codes.splits == "test"], proba)])

    idx = select(codes, "test", TSNE_POINTS, seed)
    if len(idx) >= 5:
        if progress:
            print(f"report: t-SNE map of {len(idx):,} test codes", flush=True)
        emb = embed(codes.vectors[idx] if features is None else features(idx), seed=seed)
        cells = thumbnail_cells(emb, seed=seed)
        atomic_write(out / "tsne.npz", npz_bytes(embedding=emb.astype(np.float32), ids=codes.ids[idx].astype(str),
                                                 labels=codes.labels[idx], cells=cells))
        map_ids = [str(i) for i in codes.ids[idx[cells[:, 0]]]]
        hover_ids = [str(i) for i in codes.ids[np.sort(rng.permutation(idx)[:HOVER_POINTS])]]
    if curve:
        if progress:
            print("report: accuracy against training set size", flush=True)
        write_json(out / "data_efficiency.json", data_efficiency(codes, best_c or DATA_EFFICIENCY_C, seed,
                                                                 full_accuracy))
    shown = sorted(shown)
    atomic_write(out / "thumbnails.npz", npz_bytes(
        ids=np.array(shown, dtype=str), images=thumbnails(dataset, shown, PICTURE),
        map_ids=np.array(map_ids, dtype=str), map_images=thumbnails(dataset, map_ids, MAP_CELL),
        hover_ids=np.array(hover_ids, dtype=str), hover_images=thumbnails(dataset, hover_ids, MAP_CELL)))
    write_json(out / "samples.json", samples)
