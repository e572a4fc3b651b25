"""The whole experiment as a few functions: codes -> head -> metrics -> run directory; and prediction."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .backbones import DEFAULT_BACKBONE, get_backbone, split_names
from .codes import Codes, npz_bytes, atomic_write
from .evaluate import evaluate
from .extract import extract_codes, forward, inference_model
from .errors import CnnCodesError
from .heads import make_head
from .images import BadImage, load_rgb
from .model_file import load_model_file, save_model
from . import runtime


def train_head(codes: Codes, mode: str = "tuned", flipped: Codes | None = None, **head_options):
    """Fit on the train split, choose settings on validation; flipped codes of train images double the data, and
    validation averages both views as the test split does."""
    x_train, y_train = codes.part("train")
    x_val, y_val = codes.part("validation")
    if flipped is not None:
        x_flip, y_flip = flipped.part("train")
        x_train, y_train = np.vstack([x_train, x_flip]), np.concatenate([y_train, y_flip])
        del x_flip  # the stacked copy is all the head needs: the codes of large presets take gigabytes
        x_val = [x_val, flipped.part("validation")[0]]
    return make_head(mode, **head_options).fit(x_train, y_train, x_val, y_val, n_classes=len(codes.class_names))


def predict_codes(head, codes: Codes, flipped: Codes | None = None, split: str = "test") -> np.ndarray:
    """Class probabilities for a split; with flipped codes, the average over both views."""
    x, _ = codes.part(split)
    proba = head.predict_proba(x)
    if flipped is not None:
        proba = (proba + head.predict_proba(flipped.part(split)[0])) / 2
    return proba


@dataclass
class RunResult:
    out: Path
    metrics: dict
    head: object  # SoftmaxHead or MLPHead
    codes: Codes
    timings: dict = field(default_factory=dict)


def write_json(path: Path, value) -> None:
    atomic_write(path, json.dumps(value, indent=1).encode())


def run_experiment(data=None, backbone: str = DEFAULT_BACKBONE, out="runs/latest", head: str = "tuned", *,
                   flip: bool = False, cache_dir=None, test_percent: float = 20.0, validation_percent: float = 20.0,
                   seed: int = 0, batch_size: int = 64, threads: int | None = None, device: str = "auto",
                   precision: str = "auto", engine: str = "local", address: str | None = None,
                   concurrency: int | None = None, eval_every: int = 100, normalize: str = "none", report: bool = True,
                   evaluate_test: bool = True, progress: bool = True) -> RunResult:
    """images -> codes (cached) -> softmax head -> test metrics, all written to `out`.

    evaluate_test=False stops after training (the test split stays untouched): `cnncodes train`.
    """
    from .datasets import load_dataset

    out = Path(out)
    settings = {k: v for k, v in locals().items() if k not in ("out", "load_dataset")}
    settings["data"] = str(data) if data is not None else "CIFAR-10 (official archive)"
    dataset = load_dataset(data, cache_dir=cache_dir, test_percent=test_percent,
                           validation_percent=validation_percent, seed=seed)
    extract_options = dict(cache_dir=cache_dir, batch_size=batch_size, threads=threads, device=device,
                           precision=precision, engine=engine, address=address, concurrency=concurrency,
                           progress=progress)
    t0 = time.perf_counter()
    codes = extract_codes(dataset, backbone, **extract_options)
    flipped = extract_codes(dataset, backbone, flip=True, **extract_options) if flip else None
    t1 = time.perf_counter()
    if flipped is not None and not np.array_equal(flipped.ids, codes.ids):
        keep = np.isin(codes.ids, flipped.ids)
        codes = Codes(codes.codes[keep], codes.labels[keep], codes.ids[keep], codes.splits[keep],
                      codes.class_names, codes.backbone, codes.skipped)
    if evaluate_test and not (codes.splits == "test").any():
        raise CnnCodesError("the test split is empty: use a larger --test-percent or a test/ folder")
    fitted = train_head(codes, head, flipped, eval_every=eval_every, seed=seed, normalize=normalize, progress=progress,
                        backbone=backbone)
    t2 = time.perf_counter()
    timings = {"codes_seconds": round(t1 - t0, 1), "head_seconds": round(t2 - t1, 1)}
    out.mkdir(parents=True, exist_ok=True)
    save_model(out / "model.npz", fitted, backbone, codes.class_names, flip_average=flip)
    write_json(out / "settings.json", settings)
    write_json(out / "curve.json", {"mode": head, "curve": fitted.curve_, "search": fitted.search_,
                                   "best_C": getattr(fitted, "best_c_", None), "timings": timings})
    skipped = "".join(f"{i}\t{why}\n" for i, why in codes.skipped)
    atomic_write(out / "skipped.tsv", skipped.encode("utf-8", "surrogateescape"))
    if not evaluate_test:
        return RunResult(out, {}, fitted, codes, timings)
    proba = predict_codes(fitted, codes, flipped)
    metrics = evaluate(codes.part("test")[1], proba.argmax(1), codes.class_names)
    metrics |= {"backbone": backbone, "head": head, "normalize": normalize, "flip": flip, "dataset": dataset.name,
                "split_sizes": {s: int((codes.splits == s).sum()) for s in ("train", "validation", "test")},
                "skipped": len(codes.skipped)}
    metrics["timings"] = timings
    write_predictions(out, codes, proba)
    write_json(out / "metrics.json", metrics)
    result = RunResult(out, metrics, fitted, codes, timings)
    if report:
        from .report import write_report

        write_report(out, dataset=dataset, codes=codes, progress=progress)
    return result


def write_predictions(out: Path, codes: Codes, proba: np.ndarray) -> None:
    test = codes.splits == "test"
    atomic_write(out / "test_predictions.npz", npz_bytes(ids=codes.ids[test].astype(str), labels=codes.labels[test],
                                                          proba=proba.astype(np.float32)))


def evaluate_model(model_path, data=None, out=None, *, cache_dir=None, test_percent: float = 20.0,
                   validation_percent: float = 20.0, seed: int = 0, progress: bool = True, **extract_options) -> dict:
    """Test metrics of a saved model on a dataset's test split (codes from the cache when present)."""
    from .datasets import load_dataset

    fitted, meta = load_model_file(model_path)
    dataset = load_dataset(data, cache_dir=cache_dir, test_percent=test_percent,
                           validation_percent=validation_percent, seed=seed)
    if dataset.class_names != meta["class_names"]:
        raise CnnCodesError(f"the model knows classes {meta['class_names']} but the data has {dataset.class_names}")
    codes = extract_codes(dataset, meta["backbone"], cache_dir=cache_dir, progress=progress, **extract_options)
    flipped = (extract_codes(dataset, meta["backbone"], cache_dir=cache_dir, flip=True, progress=progress,
                             **extract_options) if meta.get("flip_average") else None)
    proba = predict_codes(fitted, codes, flipped)
    metrics = evaluate(codes.part("test")[1], proba.argmax(1), codes.class_names)
    metrics |= {"backbone": meta["backbone"], "head": meta.get("mode"), "flip": bool(meta.get("flip_average")),
                "dataset": dataset.name, "skipped": len(codes.skipped)}
    if out is not None:
        out = Path(out)
        write_predictions(out, codes, proba)
        write_json(out / "metrics.json", metrics)
    return metrics


def image_codes(backbone: str, images: list, flip: bool = False, device: str = "auto", precision: str = "auto"):
    """Codes of individual images (arrays or paths): what prediction uses. Returns (codes, problems)."""
    device = runtime.resolve_device(device)
    precision = runtime.resolve_precision(precision, device)
    arrays, problems = [], {}
    for n, item in enumerate(images):
        try:
            arrays.append(load_rgb(item) if isinstance(item, (str, Path)) else np.asarray(item, np.uint8))
        except BadImage as exc:
            problems[n] = str(exc)
        except OSError as exc:
            problems[n] = f"cannot read: {exc.strerror or exc}"
    parts = []
    for name in split_names(backbone):
        spec = get_backbone(name).with_flip(flip)
        model = inference_model(name, device)
        rows = [forward(model, torch.stack([spec.preprocess(a) for a in arrays[s:s + 32]]), device, precision)
                for s in range(0, len(arrays), 32)]
        parts.append(np.vstack(rows) if rows else np.zeros((0, spec.feature_dim), np.float32))
    return np.hstack(parts), problems


def predict_images(model_path, images: list, top_k: int = 5, device: str = "auto", precision: str = "auto"):
    """For each image: a list of (class name, probability), best first; or the reason it was skipped."""
    head, meta = load_model_file(model_path)
    split_names(meta["backbone"])
    codes, problems = image_codes(meta["backbone"], images, device=device, precision=precision)
    if codes.shape[0] and codes.shape[1] != head.input_dim:
        raise CnnCodesError(f"{model_path} expects {head.input_dim}-d codes but {meta['backbone']} gives "
                            f"{codes.shape[1]}: the model file does not match its backbone")
    proba = head.predict_proba(codes) if len(codes) else np.zeros((0, len(meta["class_names"])))
    if meta.get("flip_average") and len(codes):
        proba = (proba + head.predict_proba(image_codes(meta["backbone"], [i for n, i in enumerate(images)
                                                                          if n not in problems], flip=True,
                                                        device=device, precision=precision)[0])) / 2
    results, rows = [], iter(proba)
    for n in range(len(images)):
        if n in problems:
            results.append(problems[n])
            continue
        p = next(rows)
        best = np.argsort(-p)[:top_k]
        results.append([(meta["class_names"][k], float(p[k])) for k in best])
    return results
