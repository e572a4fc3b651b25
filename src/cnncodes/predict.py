"""Prediction on new images with a saved model: a few images in Python, or a whole folder streamed to a file."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .codes import runtime
from .backbones import backbone_names, get_backbone
from .data.datasets import IMAGE_SUFFIXES
from .errors import CnnCodesError
from .data.images import item_reader
from .codes.extract import codes_graphs
from .codes.inference import encode, inference_model
from .model_file import load_model_file, model_graphs
from .settings import RunSettings

CHUNK = 256  # images per step of prediction: memory stays the same however many images there are


def image_codes(backbone: str, images: Sequence, flip: bool = False, device: str = "auto", precision: str = "auto",
                batch_size: int = 64, graphs: dict | None = None):
    """Codes of individual images (arrays or paths). Returns (codes of the usable images, {position: reason}).
    graphs: {backbone name: ONNX graph} for codes computed by ONNX Runtime (see codes_graphs)."""
    device = runtime.resolve_device(device, "onnx" if graphs else "torch")
    precision = runtime.resolve_precision(precision, device)

    read = item_reader(images)
    parts, problems = [], {}
    for name in backbone_names(backbone):
        spec = get_backbone(name).with_flip(flip)
        rows = np.zeros((len(images), spec.feature_dim), np.float32)
        model = inference_model(name, device, (graphs or {}).get(name))
        for chunk, codes, bad in encode(read, range(len(images)), spec, model, device=device,
                                        precision=precision, batch_size=batch_size, threads=runtime.cpu_count()):
            rows[chunk.start:chunk.stop] = codes
            problems.update(bad)
        parts.append(rows)
    usable = [i for i in range(len(images)) if i not in problems]
    return np.hstack(parts)[usable], problems


def _predict_chunk(head, meta: dict, images: Sequence, top_k: int, device: str, precision: str, graphs: dict) -> list:
    if head is None:  # an exported ONNX model
        return _results(meta.predict_images(images), meta.class_names, top_k)
    codes, problems = image_codes(meta["backbone"], images, device=device, precision=precision, graphs=graphs)
    if codes.shape[0] and codes.shape[1] != head.input_dim:
        raise CnnCodesError(f"the model expects {head.input_dim}-d codes but {meta['backbone']} gives "
                            f"{codes.shape[1]}: the model file does not match its backbone")
    proba = head.predict_proba(codes) if len(codes) else np.zeros((0, len(meta["class_names"])))
    if meta.get("flip_average") and len(codes):
        mirrored, _ = image_codes(meta["backbone"], [x for n, x in enumerate(images) if n not in problems], flip=True,
                                  device=device, precision=precision, graphs=graphs)
        proba = (proba + head.predict_proba(mirrored)) / 2  # the same usable images, in the same order
    return _results((proba, problems), meta["class_names"], top_k)


def _results(predicted, class_names: list, top_k: int) -> list:
    """(probabilities of the usable images, {position: reason}) -> per image: top-k (name, p) or the reason."""
    proba, problems = predicted
    results, rows = [], iter(proba)
    for n in range(len(proba) + len(problems)):
        if n in problems:
            results.append(problems[n])
            continue
        p = next(rows)
        results.append([(class_names[k], float(p[k])) for k in np.argsort(-p)[:top_k]])
    return results


def predict_stream(model_path, images: Sequence, top_k: int = 5, device: str = "auto",
                   precision: str = "auto") -> Iterator:
    """For each image in order: a list of (class name, probability), best first, or the reason it was skipped;
    computed CHUNK images at a time. model_path: model.npz, or a model.onnx from `cnncodes export` (run by
    ONNX Runtime alone)."""
    if Path(model_path).suffix.lower() == ".onnx":
        from .export import OnnxModel

        head, meta, graphs = None, OnnxModel(model_path), {}
    else:
        head, meta = load_model_file(model_path)
        graphs = model_graphs(model_path, meta) or codes_graphs(RunSettings.from_dict(meta["settings"]))
    for start in range(0, len(images), CHUNK):
        yield from _predict_chunk(head, meta, images[start:start + CHUNK], top_k, device, precision, graphs)


def predict_images(model_path, images: Sequence, top_k: int = 5, device: str = "auto", precision: str = "auto"):
    """predict_stream as a list (for a handful of images)."""
    return list(predict_stream(model_path, images, top_k, device, precision))


def list_images(paths: Sequence) -> list[Path]:
    """Files as given; folders searched recursively for image files (hidden entries skipped), in sorted order."""
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out += [Path(dirpath) / f for f in sorted(filenames)
                        if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
        else:
            out.append(path)
    return out


def write_predictions_file(model_path, images: Sequence[Path], out: Path, fmt: str = "csv", top_k: int = 5,
                           device: str = "auto", precision: str = "auto", progress: bool = True) -> tuple[int, int]:
    """Stream predictions to a CSV (path, class_1, probability_1, ..., error) or JSON file; written beside `out`
    and renamed once complete. Returns (predicted, skipped)."""
    from tqdm import tqdm

    if fmt not in ("csv", "json"):
        raise CnnCodesError(f"--format must be csv or json (got {fmt!r})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    done = skipped = 0
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f, \
            tqdm(total=len(images), unit="img", desc="predicting", disable=not progress) as bar:
        rows = csv.writer(f) if fmt == "csv" else None
        if rows:
            rows.writerow(["path"] + [f"{c}_{k}" for k in range(1, top_k + 1) for c in ("class", "probability")]
                          + ["error"])
        else:
            f.write("[")
        for n, (path, result) in enumerate(zip(images, predict_stream(model_path, images, top_k, device, precision))):
            failed = isinstance(result, str)
            skipped += failed
            done += not failed
            if rows:
                cells = [] if failed else [v for name, p in result for v in (name, f"{p:.6f}")]
                rows.writerow([str(path)] + cells + [""] * (2 * top_k - len(cells)) + [result if failed else ""])
            else:
                item = {"path": str(path), "error": result} if failed else {
                    "path": str(path), "top": [{"class": name, "probability": round(p, 6)} for name, p in result]}
                f.write(("," if n else "") + "\n" + json.dumps(item))
            bar.update(1)
        if not rows:
            f.write("\n]\n")
    os.replace(tmp, out)
    return done, skipped
