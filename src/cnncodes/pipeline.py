"""The whole experiment as a few functions: codes -> head -> metrics -> run directory (prediction: predict.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .codes.matrix import take, vstack
from .codes.view import Codes
from .data.datasets import UNLABELED, load_dataset
from .errors import CnnCodesError
from .codes.extract import codes_graphs, extract_codes, image_codes
from .files import atomic_path, atomic_write, npz_bytes, write_json
from .heads import Head, SoftmaxHead, make_head
from .heads.unknown import UNSEEN_CALIBRATION, UnknownDetector
from .outputs.metrics import classification_metrics
from .heads.model_file import load_model_file, model_file_of, model_graphs, save_model
from .settings import RunSettings


def train_head(codes: Codes, mode: str = "tuned", flipped: Codes | None = None, extra: tuple | None = None,
               **head_options):
    """Fit on the train split, choose settings on validation; flipped codes of train images double the data, and
    validation averages both views as the test split does. extra: (codes, labels) of more training rows."""
    x_train, y_train = codes.part("train")
    x_val, y_val = codes.part("validation")
    if extra is not None:
        x_train, y_train = vstack(x_train, extra[0]), np.concatenate([y_train, extra[1]])
    if flipped is not None:
        x_flip, y_flip = flipped.part("train")
        x_train, y_train = vstack(x_train, x_flip), np.concatenate([y_train, y_flip])  # on disk: nothing is read
        x_val = [x_val, flipped.part("validation")[0]]
    return make_head(mode, **head_options).fit(x_train, y_train, x_val, y_val, n_classes=len(codes.class_names))


def predict_codes(head, codes: Codes, flipped: Codes | None = None, split: str = "test") -> np.ndarray:
    """Class probabilities for a split; with flipped codes, the average over both views."""
    return split_answers(head, codes, flipped, None, split)[0]


def split_answers(head, codes: Codes, flipped: Codes | None, unknown: UnknownDetector | None,
                  split: str = "test") -> tuple[np.ndarray, np.ndarray | None]:
    """(class probabilities, unknown scores or None) of a split; with a detector, the logits come with its features
    (Head.detector_inputs: one read of the codes)."""
    from .heads.base import softmax

    x, _ = codes.part(split)
    if unknown is None:
        scores, proba = None, head.predict_proba(x)
    else:
        features, logits = head.detector_inputs(x)
        scores, proba = unknown.score(features, logits), softmax(logits)
    if flipped is not None:
        proba = (proba + head.predict_proba(flipped.part(split)[0])) / 2
    return proba, scores


@dataclass
class RunResult:
    out: Path
    settings: RunSettings
    metrics: dict
    head: Head
    codes: Codes
    timings: dict = field(default_factory=dict)
    unlabelled: dict | None = None  # what the run decided about the collection's unlabelled images (SpreadChoice)
    head_choice: str | None = None  # why head "auto" became the head it did (presets.choose_head)


def codes_of(dataset, settings: RunSettings, progress: bool, graphs: dict | None = None) -> tuple[Codes, Codes | None]:
    """The codes a run trains and predicts on, and with --flip those of the mirrored images, row for row.
    graphs: the ONNX graphs a saved model used (its run folder's graphs/), else those of the settings."""
    options = settings.extract_options() | {"graphs": graphs}
    codes = extract_codes(dataset, settings.backbone, progress=progress, **options)
    if not settings.flip:
        return codes, None
    flipped = extract_codes(dataset, settings.backbone, flip=True, progress=progress, **options)
    codes = codes.select(np.isin(codes.ids, flipped.ids))  # an image unusable in one view is left out of both
    row = {item_id: n for n, item_id in enumerate(flipped.ids)}
    return codes, flipped.select(np.array([row[i] for i in codes.ids], dtype=np.int64))


def run_experiment(settings: RunSettings | None = None, out="runs/latest", *, report: bool = True,
                   evaluate_test: bool = True, progress: bool = True, **changes) -> RunResult:
    """images -> codes (cached) -> head -> test metrics, all written to `out`.

    settings: a RunSettings (default: all defaults), with `changes` applied (run_experiment(data="...",
    backbone="...")). evaluate_test=False stops after training (the test split stays untouched): `cnncodes train`.
    """
    from .presets import choose_head

    settings = (settings or RunSettings()).but(**changes).resolved()
    out = Path(out)
    dataset = load_dataset(settings.data, **settings.dataset_options())
    settings, head_choice = choose_head(settings, dataset)
    t0 = time.perf_counter()
    graphs = codes_graphs(settings, dataset)
    codes, flipped = codes_of(dataset, settings, progress, graphs)
    t1 = time.perf_counter()
    if evaluate_test and not (codes.splits == "test").any():
        raise CnnCodesError("the test split is empty: `cnncodes run` scores its model on one; give a larger "
                            "--test-percent, a test/ folder or a manifest's split column, or train on every labelled "
                            "image without a test with `cnncodes train`")
    if not (codes.splits == "train").any():
        raise CnnCodesError("no labelled training images could be used (see skipped.tsv or the messages above)")
    if len(np.unique(codes.labels[codes.splits == "train"])) < 2:
        from .outputs.metrics import split_lines

        raise CnnCodesError("the train split holds images of one class only: a classifier needs two; no other class "
                            "has usable training images (label more images of the other classes)\n"
                            + "\n".join(split_lines(codes.splits, codes.labels, codes.class_names, scored=False)))
    head_options = dict(eval_every=settings.eval_every, epochs=settings.finetune_epochs, seed=settings.seed,
                        normalize=settings.normalize,
                        class_weight=settings.class_weight, progress=progress, backbone=settings.backbone,
                        precision=settings.precision)
    fitted = train_head(codes, settings.head, flipped, **head_options)
    fitted, spread = learn_from_unlabelled(fitted, codes, settings, head_options, progress)
    metrics_unlabelled = None if spread is None else spread.as_dict()
    unknown = fit_unknown(fitted, codes, settings)
    t2 = time.perf_counter()
    timings = {"codes_seconds": round(t1 - t0, 1), "head_seconds": round(t2 - t1, 1)}
    clear_run_folder(out)
    save_model(out / "model.npz", fitted, settings, codes.class_names, test_split=test_split_id(dataset),
               graphs=keep_graphs(graphs, out), unknown=unknown)
    write_json(out / "settings.json", settings.to_dict())
    write_json(out / "curve.json", {"mode": settings.head, "curve": fitted.curve_, "search": fitted.search_,
                                   "best_C": getattr(fitted, "best_c_", None), "timings": timings})
    skipped = "".join(f"{i}\t{why}\n" for i, why in codes.skipped)
    atomic_write(out / "skipped.tsv", skipped.encode("utf-8", "surrogateescape"))
    if not evaluate_test:
        return RunResult(out, settings, {}, fitted, codes, timings, metrics_unlabelled, head_choice)
    proba, scores = split_answers(fitted, codes, flipped, unknown)
    metrics = run_metrics(codes, proba, settings, dataset.name) | unknown_metrics(unknown, scores)
    metrics |= {"validation_accuracy": fitted.validation_accuracy_, "timings": timings,
                "chosen_on": getattr(fitted, "selection_", "validation split"),
                "split_sizes": {s: int((codes.splits == s).sum()) for s in ("train", "validation", "test")}}
    metrics["split_sizes_by_class"] = dataset.split_sizes()
    metrics["unlabelled"] = metrics_unlabelled
    metrics["head_choice"] = head_choice
    write_predictions(out, codes, proba)
    write_unlabeled_predictions(out, fitted, codes, flipped, dataset, unknown)
    write_json(out / "metrics.json", metrics)
    if report:
        t3 = time.perf_counter()
        from .explain import write_mistake_maps
        from .outputs.report import write_report
        from .outputs.report_data import write_report_data

        # a fine-tuned network was trained on every training label: heads on fewer labels of its features would
        # overstate what fewer labels give, so its run has no data-efficiency curve
        fine_tuned = settings.head == "finetune"
        features = (lambda rows: fitted.embed(codes.vectors[rows])) if fine_tuned else None
        own = settings.head == "tuned" and not settings.flip and not (metrics_unlabelled or {}).get("used") \
            and settings.normalize == "none" and settings.class_weight == "none"  # the curve's own heads' settings
        write_report_data(out, dataset, codes, proba, getattr(fitted, "best_c_", None), settings.seed, progress,
                          full_accuracy=metrics["accuracy"] if own else None, features=features,
                          curve=not fine_tuned)
        test = codes.splits == "test"
        write_mistake_maps(out, dataset, fitted, settings.backbone, codes.ids[test], codes.labels[test], proba)
        write_report(out, progress=progress)
        timings["report_seconds"] = round(time.perf_counter() - t3, 1)
        write_json(out / "metrics.json", metrics)  # now with the report's time (metrics["timings"] is timings)
    return RunResult(out, settings, metrics, fitted, codes, timings, metrics_unlabelled, head_choice)


def learn_from_unlabelled(head, codes: Codes, settings: RunSettings, head_options: dict, progress: bool) -> tuple:
    """(head, SpreadChoice or None): where the collection has unlabelled images, the tuned head trained again with
    their spread labels when that scores higher (labeling/unlabelled.py); else the head as it was. Not with --flip
    (the decision compares heads on one view) nor other heads. The unknown detector stays calibrated on the labelled
    images alone."""
    from .backbones import final_code_columns
    from .labeling.unlabelled import choose_spread

    if settings.head != "tuned" or settings.flip or not (codes.splits == UNLABELED).any():
        return head, None
    collection = codes.select(codes.splits != "test")
    if progress:
        print(f"head: do the {int((codes.splits == UNLABELED).sum()):,} unlabelled images help? (labels spread over "
              "the codes' neighbours)", flush=True)
    choice = choose_spread(collection.vectors, collection.labels, collection.splits, len(codes.class_names),
                           head.best_c_, settings.seed, settings.class_weight, settings.normalize,
                           final_code_columns(settings.backbone))
    if choice is None or not choice.used:
        return head, choice
    x_spread = take(collection.vectors, choice.rows)
    if choice.chosen_on == "validation split":
        again = train_head(codes, "tuned", extra=(x_spread, choice.labels), **head_options)
        if again.validation_accuracy_ >= head.validation_accuracy_:
            return again, choice
        choice.used, choice.rows, choice.labels = False, None, None  # its own C search scored lower: the plain head
        return head, choice
    # a small validation split: C as the plain head chose it, and every labelled image in the fit
    labelled = codes.select(np.isin(codes.splits, ["train", "validation"]))
    fitted = tuned_at(head.best_c_, settings).fit(vstack(labelled.vectors, x_spread),
                                                  np.concatenate([labelled.labels, choice.labels]),
                                                  n_classes=len(codes.class_names))
    fitted.validation_accuracy_, fitted.selection_ = choice.accuracy_with, choice.chosen_on
    fitted.best_c_ = head.best_c_
    return fitted, choice


def tuned_at(c: float, settings: RunSettings) -> SoftmaxHead:
    """A tuned head with the run's settings and a fixed L2 strength (the one the run's head chose)."""
    return SoftmaxHead("tuned", c_grid=(c,), seed=settings.seed, normalize=settings.normalize,
                       class_weight=settings.class_weight)


def fit_unknown(head, codes: Codes, settings: RunSettings) -> UnknownDetector | None:
    """The run's 'none of these' detector, calibrated on validation (heads/unknown.py); None when switched off. A
    fine-tuned head's detector measures the pretrained network's codes beside its logits, and is calibrated on the
    validation split from UNSEEN_CALIBRATION images on (fine-tuning only chose its epoch on them; a network fine-tuned
    per fold would cost more than the run); with fewer, None."""
    seen = getattr(head, "seen_", None)  # what fitting computed for the detector: read here, not kept on the head
    if seen is not None:
        head.seen_ = None
    if not settings.detect_unknown:
        return None
    x_train, y_train = codes.part("train")
    x_val, y_val = codes.part("validation")
    if settings.head == "finetune":
        if len(y_val) < UNSEEN_CALIBRATION:
            return None
        return UnknownDetector.fit(head, x_train, y_train, x_val, y_val, seed=settings.seed, validation_unseen=True,
                                   seen=seen)

    def fold_head(x, y):  # the same kind of head; a tuned one keeps the L2 strength it chose
        fresh = tuned_at(head.best_c_, settings) if settings.head == "tuned" else make_head(
            settings.head, seed=settings.seed, normalize=settings.normalize, class_weight=settings.class_weight)
        return fresh.fit(x, y, n_classes=len(codes.class_names))

    return UnknownDetector.fit(head, x_train, y_train, x_val, y_val, fold_head=fold_head, seed=settings.seed)


def unknown_metrics(unknown: UnknownDetector | None, scores: np.ndarray | None) -> dict:
    """The share of test images (scores: their unknown scores) the detector calls unknown (all of them show known
    classes: ideally 1 - keep)."""
    if unknown is None:
        return {"unknown": None}
    return {"unknown": {"keep": unknown.keep, "threshold": unknown.threshold, "calibrated_on": unknown.calibrated_on,
                        "test_share_called_unknown": float((scores > unknown.threshold).mean())}}


def keep_graphs(graphs: dict, out: Path) -> dict:
    """Copy the ONNX graphs that computed a run's codes into its folder (graphs/): its model then predicts with
    exactly these graphs, wherever the training images and the cache are. Returns {backbone: file name}."""
    import shutil

    for graph in graphs.values():
        atomic_path(lambda tmp, _graph=graph: shutil.copyfile(_graph, tmp), out / "graphs" / graph.name)
    return {name: graph.name for name, graph in graphs.items()}


def write_unlabeled_predictions(out: Path, head, codes: Codes, flipped: Codes | None, dataset,
                                unknown: UnknownDetector | None, top_k: int = 3) -> None:
    """unlabeled_predictions.csv: id, path, label (the top class, or "unknown"), the unknown score and the top classes
    with probabilities, for each image without a label."""
    import csv
    import io

    if not (codes.splits == UNLABELED).any():
        return
    proba, scores = split_answers(head, codes, flipped, unknown, split=UNLABELED)
    k = min(top_k, len(codes.class_names))
    text = io.StringIO()
    rows = csv.writer(text)
    rows.writerow(["id", "path", "label", "unknown_score"]
                  + [f"{c}_{n}" for n in range(1, k + 1) for c in ("class", "probability")])
    for n, (item_id, p) in enumerate(zip(codes.ids[codes.splits == UNLABELED], proba)):
        path = dataset.root / item_id if dataset.root is not None else ""
        called = scores is not None and scores[n] > unknown.threshold
        rows.writerow([item_id, path, "unknown" if called else codes.class_names[int(p.argmax())],
                       "" if scores is None else f"{scores[n]:.4f}"]
                      + [v for c in np.argsort(-p)[:k] for v in (codes.class_names[c], f"{p[c]:.6f}")])
    atomic_write(out / "unlabeled_predictions.csv", text.getvalue().encode("utf-8", "surrogateescape"))


def test_split_id(dataset) -> dict:
    """What identifies a test split: its size and a hash of its item ids (stored in the model file)."""
    import hashlib

    ids = sorted(i for i, s in zip(dataset.ids, dataset.splits) if s == "test")
    digest = hashlib.sha256("\n".join(ids).encode("utf-8", "surrogateescape")).hexdigest()
    return {"images": len(ids), "sha256": digest}


def clear_run_folder(out: Path) -> None:
    """Remove what an earlier run wrote into `out`, so that a folder never mixes files of two runs (a `train`
    after a `run` would leave the old metrics and report beside the new model)."""
    from .outputs.report import PICTURES
    from .outputs.report_data import FILES

    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES + FILES + [picture for picture, _ in PICTURES] + ["report.html"]:
        (out / name).unlink(missing_ok=True)


RUN_FILES = ["model.npz", "settings.json", "curve.json", "skipped.tsv", "metrics.json", "test_predictions.npz",
             "unlabeled_predictions.csv"]


def run_metrics(codes: Codes, proba: np.ndarray, settings: RunSettings, dataset_name: str) -> dict:
    metrics = classification_metrics(codes.part("test")[1], proba, codes.class_names)
    return metrics | {"backbone": settings.backbone, "head": settings.head, "normalize": settings.normalize,
                      "flip": settings.flip, "dataset": dataset_name, "skipped": len(codes.skipped)}


def write_predictions(out: Path, codes: Codes, proba: np.ndarray) -> None:
    test = codes.splits == "test"
    atomic_write(out / "test_predictions.npz", npz_bytes(ids=codes.ids[test].astype(str), labels=codes.labels[test],
                                                          proba=proba.astype(np.float32)))


def evaluate_model(model_path, data=None, out=None, *, progress: bool = True, **changes) -> dict:
    """Test metrics of a saved model, on the splits its run used (the model file holds the run's settings);
    `data` and extraction `changes` (device, batch size...) may differ from the run's."""
    out = None if out is None else Path(out)
    if out is not None and ((out / "model.npz").exists() or (out / "settings.json").exists()):
        raise CnnCodesError(f"{out} is a run folder: evaluate's metrics.json and test_predictions.npz would mix "
                            "with the run's own; choose another --out")
    fitted, meta = load_model_file(model_file_of(model_path))
    settings = RunSettings.from_dict(meta["settings"]).but(data=data, **changes)
    dataset = settings.load_data(given=data is not None)
    if not (dataset.splits == "test").any():
        raise CnnCodesError(f"{settings.data or 'CIFAR-10'} has no test images: there is nothing to evaluate")
    if dataset.class_names != meta["class_names"]:
        raise CnnCodesError(f"the model knows classes {meta['class_names']} but the data has {dataset.class_names}")
    if meta["test_split"] != test_split_id(dataset):
        raise CnnCodesError(f"the test split of {settings.data or 'CIFAR-10'} is not the one this model was trained "
                            f"beside ({test_split_id(dataset)['images']} test images here, "
                            f"{meta['test_split']['images']} then): evaluating could score training images")
    codes, flipped = codes_of(dataset, settings, progress, model_graphs(model_path, meta))
    proba = predict_codes(fitted, codes, flipped)
    metrics = run_metrics(codes, proba, settings, dataset.name)
    if out is not None:
        write_predictions(out, codes, proba)
        write_json(out / "metrics.json", metrics)
    return metrics


def audit_run(run_dir=None, out=None, *, settings: RunSettings | None = None, threshold: float | None = None,
              folds: int = 5, progress: bool = True, data=None) -> tuple[Path, "AuditResult"]:
    """`cnncodes audit`: the audit of a run's data (its settings, codes and test predictions), or of any data and
    backbone given as settings. Writes audit.html and the CSV tables to `out` (default RUN_DIR/audit)."""
    from .audit.issues import DUPLICATE_SIMILARITY, audit_codes, dataset_thumbnails
    from .audit.page import write_audit

    test_proba = None
    if run_dir is not None:
        run_dir = Path(run_dir)
        settings = RunSettings.of_run(run_dir).but(data=data)
        out = Path(out) if out is not None else run_dir / "audit"
        if data is not None:
            settings.load_data(given=True)  # a mistyped --data is named as such
    elif settings is None or out is None:
        raise CnnCodesError("audit needs a run folder, or --data (and --backbone) with --out")
    dataset = settings.load_data()
    # a fine-tuned run's codes are activation maps: the audit compares images by the network's pooled codes
    backbone = "+".join(n.split(":")[0] if ":cut=" in n else n for n in settings.backbone.split("+"))
    graphs = model_graphs(run_dir / "model.npz", load_model_file(run_dir / "model.npz")[1]) \
        if run_dir is not None and (run_dir / "model.npz").exists() else None
    codes = extract_codes(dataset, backbone, progress=progress, graphs=graphs, **settings.extract_options()).labelled()
    if run_dir is not None and (run_dir / "test_predictions.npz").exists():
        with np.load(run_dir / "test_predictions.npz", allow_pickle=False) as z:
            row = {i: n for n, i in enumerate(z["ids"])}
            test_ids = codes.ids[codes.splits == "test"]
            if all(str(i) in row for i in test_ids):  # the run's own predictions, for the same test images
                test_proba = z["proba"][[row[str(i)] for i in test_ids]]
    if progress:
        print(f"audit: {len(codes.ids):,} images", flush=True)
    result = audit_codes(codes, test_proba, thumbnails=dataset_thumbnails(dataset, codes.ids, progress), folds=folds,
                         threshold=DUPLICATE_SIMILARITY if threshold is None else threshold, seed=settings.seed)
    return write_audit(result, dataset, out), result


def collection(source, data=None) -> tuple[Codes, object, RunSettings | None, dict]:
    """(codes, dataset or None, settings or None, ONNX graphs) of a run folder (its images at `data`, default the
    recorded path), or of a codes.npz from `cnncodes extract`."""
    source = Path(source)
    if source.is_dir():
        settings = RunSettings.of_run(source).but(data=data)
        _, meta = load_model_file(source / "model.npz")
        graphs = model_graphs(source / "model.npz", meta)
        pooled = "+".join(n.split(":")[0] if ":cut=" in n else n for n in settings.backbone.split("+"))
        if pooled != settings.backbone:  # a fine-tuned run's codes are activation maps: images are compared by the
            settings, graphs = settings.but(backbone=pooled), {}  # network's pooled codes, on the run's runtime
        dataset = settings.load_data(given=data is not None)
        graphs = graphs or codes_graphs(settings, dataset)  # the collection and the queries: the same graphs
        codes = extract_codes(dataset, settings.backbone, progress=False, graphs=graphs, **settings.extract_options())
        return codes, dataset, settings, graphs
    return Codes.load(source), None, None, {}


def similar_images(source, images: Sequence, k: int = 12, data=None) -> tuple[list, Codes, object]:
    """For each query image: the k most similar images of the collection as (row, similarity), or the reason the
    query could not be read. A query file that is itself in the collection (the same content) is not its own
    neighbour."""
    from .data.content import file_key

    codes, dataset, settings, graphs = collection(source, data)
    query, problems = image_codes(codes.backbone, list(images), graphs=graphs,
                                  **({"precision": settings.precision} if settings else {}))
    rows, sims = codes.nearest(query, k + 1) if len(query) else (np.zeros((0, k), int), np.zeros((0, k)))
    key_of_row = {}
    if dataset is not None:
        key = dict(zip(dataset.ids, dataset.keys))
        key_of_row = {n: key.get(str(i)) for n, i in enumerate(codes.ids)}
    found, usable = [], iter(zip(rows, sims))
    for n, image in enumerate(images):
        if n in problems:
            found.append(problems[n])
            continue
        itself = file_key(image) if key_of_row and isinstance(image, (str, Path)) else None
        found.append([(r, s) for r, s in zip(*next(usable)) if itself is None or key_of_row[r] != itself][:k])
    return found, codes, dataset
