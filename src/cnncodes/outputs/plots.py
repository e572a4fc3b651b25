"""The pictures of a run (matplotlib, PNG): each function draws one figure from plain arrays."""
from __future__ import annotations

from pathlib import Path

import io

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..files import atomic_write


def _subplots(*grid, figsize, **options):
    """A figure of its own (no pyplot): drawing sets no backend or global state of the process."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **options)


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buf.getvalue())


MAX_LISTED = 20  # classes a legend, a confusion matrix or a sample grid shows before it picks


def _colours(k: int):
    if k > MAX_LISTED:
        cmap = matplotlib.colormaps["turbo"]
        return [cmap(i / (k - 1)) for i in range(k)]
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def sample_grid(images_by_class: dict[str, list[np.ndarray]], path: Path) -> None:
    """A few images per class, one row each, class name on the left."""
    rows = len(images_by_class)
    cols = max(len(v) for v in images_by_class.values())
    fig, axes = _subplots(rows, cols, figsize=(cols * 0.9 + 1.2, rows * 0.9), squeeze=False)
    for r, (name, imgs) in enumerate(images_by_class.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([]); ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(imgs):
                ax.imshow(imgs[c])
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Random sample of the training images")
    _save(fig, path)


def learning_curve(curve: list[dict], path: Path) -> None:
    """Accuracy per SGD step (the original protocol) or per epoch (the MLP and fine-tuned heads)."""
    unit = "step" if "step" in curve[0] else "epoch"
    fig, ax = _subplots(figsize=(7, 4))
    train_label = "train (2,000-image probe)" if unit == "step" else "train (during the epoch)"
    for key, label in (("train_accuracy", train_label), ("validation_accuracy", "validation")):
        rows = [r for r in curve if key in r]
        if rows:
            ax.plot([r[unit] for r in rows], [r[key] * 100 for r in rows], label=label, marker="" if unit == "step" else ".")
    ax.set_xlabel("SGD step (batch of 10)" if unit == "step" else "epoch"); ax.set_ylabel("accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Learning curve of the softmax head (original protocol)" if unit == "step"
                 else "Learning curve per epoch (epoch 0: the linear probe)" if curve[0][unit] == 0
                 else "Learning curve of the MLP head")
    ax.grid(alpha=0.3); ax.legend(loc="lower right")
    _save(fig, path)


def c_search(search: list[dict], best_c: float | None, path: Path) -> None:
    fig, ax = _subplots(figsize=(7, 4))
    cs = [r["C"] for r in search]
    crossed = "log_loss" in search[0]  # chosen by cross-validation over train + validation (a small validation split)
    ax.semilogx(cs, [r["validation_accuracy"] * 100 for r in search], "o-",
                label="cross-validated (C chosen by log-loss)" if crossed else "validation")
    if not crossed:
        ax.semilogx(cs, [r["train_accuracy"] * 100 for r in search], "s--", label="train", alpha=0.7)
    if best_c is not None:
        ax.axvline(best_c, color="grey", ls=":", label=f"chosen C = {best_c:g}")
    ax.set_xlabel("C (inverse L2 strength)"); ax.set_ylabel("accuracy (%)")
    ax.set_title("Tuned head: accuracy against regularisation")
    ax.grid(alpha=0.3); ax.legend(loc="lower right")
    _save(fig, path)


def tsne_scatter(emb: np.ndarray, labels: np.ndarray, names: list[str], path: Path) -> None:
    fig, ax = _subplots(figsize=(8, 8))
    colours = _colours(len(names))
    size = max(1.0, min(12.0, 20000 / max(1, len(emb))))
    for k, name in enumerate(names):
        m = labels == k
        ax.scatter(emb[m, 0], emb[m, 1], s=size, color=colours[k], label=name, alpha=0.7, linewidths=0)
    ax.set_xticks([]); ax.set_yticks([])
    if len(names) <= MAX_LISTED:
        ax.set_title(f"t-SNE of CNN codes ({len(emb):,} images), coloured by class")
        ax.legend(markerscale=max(1, 12 / size), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    else:  # a legend of a hundred colours reads as noise: the image map and the report's table name the classes
        ax.set_title(f"t-SNE of CNN codes ({len(emb):,} images), coloured by class ({len(names)} classes)")
    _save(fig, path)


def tsne_thumbnails(images: np.ndarray, cells: np.ndarray, path: Path, grid: int = 40) -> None:
    """The images drawn at their t-SNE positions: images[n] fills the cell (row, column) of cells[n]."""
    cell = images.shape[1] if len(images) else 32
    canvas = np.full((grid * cell, grid * cell, 3), 255, np.uint8)
    for image, (_, row, col) in zip(images, cells):
        canvas[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = image
    fig, ax = _subplots(figsize=(10, 10))
    ax.imshow(canvas); ax.axis("off")
    ax.set_title("t-SNE map: images at their positions")
    _save(fig, path)


def confusion_heatmap(confusion: np.ndarray, names: list[str], path: Path) -> None:
    """The whole matrix up to MAX_LISTED classes; beyond, the classes involved in the most mistakes."""
    confusion = np.asarray(confusion)
    title = "Confusion matrix (test)"
    if len(names) > MAX_LISTED:
        errors = confusion.sum(0) + confusion.sum(1) - 2 * np.diag(confusion)
        keep = np.sort(np.argsort(-errors, kind="stable")[:MAX_LISTED])
        confusion, names = confusion[np.ix_(keep, keep)], [names[i] for i in keep]
        title = f"Confusion among the {MAX_LISTED} most confused classes (test)"
    k = len(names)
    fig, ax = _subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.55 * k))
    ax.imshow(confusion, cmap="Blues")
    top = confusion.max() or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if confusion[i, j] > top / 2 else "black")
    ax.set_xticks(range(k), names, rotation=45, ha="right"); ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted"); ax.set_ylabel("true"); ax.set_title(title)
    _save(fig, path)


def per_class_bars(per_class: dict, path: Path, most: int = 2 * MAX_LISTED) -> None:
    """Accuracy per class; beyond `most` classes, the `most` least accurate ones."""
    names = list(per_class)
    acc = [(per_class[n]["accuracy"] or 0) * 100 for n in names]
    title = "Per-class accuracy"
    if len(names) > most:
        order = np.argsort(acc, kind="stable")[:most]
        names, acc = [names[i] for i in order], [acc[i] for i in order]
        title = f"Per-class accuracy: the {most} least accurate of {len(per_class)} classes"
    fig, ax = _subplots(figsize=(7, 0.4 * len(names) + 1))
    ax.barh(names, acc, color="tab:blue"); ax.invert_yaxis()
    for y, a in enumerate(acc):
        ax.text(a + 0.5, y, f"{a:.1f}%", va="center", fontsize=8)
    ax.set_xlim(0, 105); ax.set_xlabel("test accuracy (%)"); ax.set_title(title)
    _save(fig, path)


def mistakes_grid(images: list[np.ndarray], captions: list[str], path: Path, cols: int = 6,
                  title: str = "Most confidently misclassified test images") -> None:
    rows = max(1, -(-len(images) // cols))
    fig, axes = _subplots(rows, cols, figsize=(cols * 1.9, rows * 2.2), squeeze=False)
    for n, ax in enumerate(axes.flat):
        ax.axis("off")
        if n < len(images):
            ax.imshow(images[n]); ax.set_title(captions[n], fontsize=7)
    fig.suptitle(title)
    _save(fig, path)


def data_efficiency(sizes: list[int], accuracies: list[float], path: Path) -> None:
    fig, ax = _subplots(figsize=(7, 4))
    ax.semilogx(sizes, [a * 100 for a in accuracies], "o-")
    for s, a in zip(sizes, accuracies):
        ax.annotate(f"{a * 100:.1f}%", (s, a * 100), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.set_xlabel("training images"); ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy against the number of training images (tuned head, fixed C)")
    ax.grid(alpha=0.3)
    _save(fig, path)
