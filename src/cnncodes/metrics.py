"""Accuracy, balanced accuracy, macro-F1, top-5, per-class accuracy and the confusion matrix, as plain values and
as a printed table (scikit-learn computes the summary scores)."""
from __future__ import annotations

import numpy as np


def classification_metrics(y_true, proba: np.ndarray, class_names: list[str]) -> dict:
    """proba: (N, K) class probabilities; the prediction is their argmax."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    y_true, proba = np.asarray(y_true), np.asarray(proba)
    y_pred = proba.argmax(1)
    k = len(class_names)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(1)
    per_class = {name: {"accuracy": float(confusion[i, i] / support[i]) if support[i] else None, "images": int(support[i])}
                 for i, name in enumerate(class_names)}
    summary = {"accuracy": None, "balanced_accuracy": None, "macro_f1": None, "top5_accuracy": None}
    if len(y_true):
        present = np.unique(y_true)  # classes without test images would count as zero recall and F1
        summary = {"accuracy": float((y_true == y_pred).mean()),
                   "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
                   "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
                   "top5_accuracy": float((np.argsort(-proba, axis=1)[:, :5] == y_true[:, None]).any(1).mean())}
    return summary | {"images": int(len(y_true)), "per_class": per_class, "confusion": confusion.tolist(),
                      "class_names": list(class_names)}


def format_table(metrics: dict) -> str:
    """Per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    names = metrics["class_names"]
    width = max(8, *(len(n) for n in names))
    lines = [f"test accuracy {metrics['accuracy'] * 100:.2f}% on {metrics['images']} images (balanced "
             f"{metrics['balanced_accuracy'] * 100:.2f}%, macro-F1 {metrics['macro_f1'] * 100:.2f}%, top-5 "
             f"{metrics['top5_accuracy'] * 100:.2f}%)", "",
             f"{'class':<{width}}  accuracy  images"]
    for n in names:
        row = metrics["per_class"][n]
        acc = "   -" if row["accuracy"] is None else f"{row['accuracy'] * 100:6.1f}%"
        lines.append(f"{n:<{width}}  {acc:>8}  {row['images']:>6}")
    if len(names) > 20:
        return "\n".join(lines + ["", f"confusion matrix of {len(names)} classes: metrics.json and the report"])
    short = [n[:5] for n in names]
    lines += ["", "confusion (rows true, columns predicted)", " " * width + "".join(f"{s:>6}" for s in short)]
    for n, row in zip(names, metrics["confusion"]):
        lines.append(f"{n:<{width}}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
