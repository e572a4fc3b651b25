"""Accuracy, per-class accuracy and the confusion matrix, as plain values and as a printed table."""
from __future__ import annotations

import numpy as np


def classification_metrics(y_true, y_pred, class_names: list[str]) -> dict:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(class_names)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(1)
    per_class = {name: {"accuracy": float(confusion[i, i] / support[i]) if support[i] else None, "images": int(support[i])}
                 for i, name in enumerate(class_names)}
    return {"accuracy": float((y_true == y_pred).mean()) if len(y_true) else None, "images": int(len(y_true)),
            "per_class": per_class, "confusion": confusion.tolist(), "class_names": list(class_names)}


def format_table(metrics: dict) -> str:
    """Per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    names = metrics["class_names"]
    width = max(8, *(len(n) for n in names))
    lines = [f"test accuracy {metrics['accuracy'] * 100:.2f}% on {metrics['images']} images", "",
             f"{'class':<{width}}  accuracy  images"]
    for n in names:
        row = metrics["per_class"][n]
        acc = "   -" if row["accuracy"] is None else f"{row['accuracy'] * 100:6.1f}%"
        lines.append(f"{n:<{width}}  {acc:>8}  {row['images']:>6}")
    short = [n[:5] for n in names]
    lines += ["", "confusion (rows true, columns predicted)", " " * width + "".join(f"{s:>6}" for s in short)]
    for n, row in zip(names, metrics["confusion"]):
        lines.append(f"{n:<{width}}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
