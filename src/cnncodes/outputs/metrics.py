"""Accuracy, balanced accuracy, macro-F1, top-5, per-class accuracy and the confusion matrix, as plain values and
as a printed table (scikit-learn computes the summary scores)."""
from __future__ import annotations

import warnings

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
    summary = {"accuracy": None, "accuracy_interval_95": None, "balanced_accuracy": None, "macro_f1": None,
               "top5_accuracy": None}
    if len(y_true):
        present = np.unique(y_true)  # classes without test images would count as zero recall and F1
        with warnings.catch_warnings():  # "y_pred contains classes not in y_true": the run warns of it in its words
            warnings.filterwarnings("ignore", "y_pred contains classes not in y_true", UserWarning)
            balanced = float(balanced_accuracy_score(y_true, y_pred))
        summary = {"accuracy": float((y_true == y_pred).mean()),
                   "balanced_accuracy": balanced,
                   "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
                   "accuracy_interval_95": wilson_interval(int((y_true == y_pred).sum()), len(y_true)),
                   "top5_accuracy": float((np.argsort(-proba, axis=1)[:, :5] == y_true[:, None]).any(1).mean())
                   if k > 5 else None}
    return summary | {"images": int(len(y_true)), "per_class": per_class, "confusion": confusion.tolist(),
                      "class_names": list(class_names)}


def wilson_interval(right: int, n: int, z: float = 1.96) -> list[float]:
    """The 95% Wilson score interval of an accuracy of right / n: how far the test figure may be from the truth
    (wide on small test splits, where one image moves accuracy by several points)."""
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [float(centre - half), float(centre + half)]


def split_lines(splits: np.ndarray, labels: np.ndarray, class_names: list[str], scored: bool = True) -> list[str]:
    """What a run trains, chooses and scores on: images per split and class, and warnings where that is thin
    (scored=False: the test split is not scored, as in `cnncodes train`, so its size goes unremarked)."""
    lines, notes = [], []
    for split in ("train", "validation", "test", "unlabeled"):
        mine = labels[splits == split]
        if split == "unlabeled":
            if len(mine):
                lines.append(f"  unlabeled   {len(mine):>7,}  (predicted: unlabeled_predictions.csv)")
            continue
        counts = [int((mine == k).sum()) for k in range(len(class_names))]
        shown = ", ".join(f"{n} {c:,}" for n, c in zip(class_names[:8], counts[:8])) + (", ..." if len(counts) > 8 else "")
        lines.append(f"  {split:<10}  {len(mine):>7,}  ({shown})")
        lacking = [n for n, c in zip(class_names, counts) if c == 0]
        if lacking and len(mine):
            notes.append(f"warning: the {split} split has no images of {', '.join(lacking[:5])}")
    test = int((splits == "test").sum())
    if scored and 0 < test < 100:
        notes.append(f"warning: the test split has only {test} images: one image moves its accuracy by "
                        f"{100 / test:.1f} points (see the 95% interval below)")
    return ["images per split:"] + lines + notes


FEW_CALIBRATION = 200  # below this many calibration images, a run says its threshold is rough


def unknown_line(unknown: dict) -> str:
    few = unknown.get("calibrated_on") or FEW_CALIBRATION
    rough = "" if few >= FEW_CALIBRATION else (
        f"; the threshold was set on {few} images, so the share of new photos of known classes called unknown may be "
        "well off that (label more images to steady it)")
    return (f"called 'unknown' (none of these): {unknown['test_share_called_unknown'] * 100:.1f}% of the test images, "
            f"which all show known classes (the threshold keeps {unknown['keep'] * 100:.0f}% of the known images it "
            "was set on)"
            + rough)


def format_table(metrics: dict) -> str:
    """Per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    names = metrics["class_names"]
    width = max(8, *(len(n) for n in names))
    low, high = metrics["accuracy_interval_95"]
    top5 = f", top-5 {metrics['top5_accuracy'] * 100:.2f}%" if metrics.get("top5_accuracy") is not None else ""
    lines = [f"test accuracy {metrics['accuracy'] * 100:.2f}% on {metrics['images']} images (95% interval "
             f"{low * 100:.1f}-{high * 100:.1f}%; balanced {metrics['balanced_accuracy'] * 100:.2f}%, macro-F1 "
             f"{metrics['macro_f1'] * 100:.2f}%{top5})", "",
             f"{'class':<{width}}  accuracy  images"]
    if metrics.get("unknown"):
        lines[1:1] = [unknown_line(metrics["unknown"])]
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
