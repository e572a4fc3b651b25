"""Prediction on new images with a saved model: a few images in Python, or a whole folder streamed to a file."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .data.datasets import IMAGE_SUFFIXES
from .errors import CnnCodesError
from .files import atomic_output
from .codes.extract import codes_graphs, image_codes
from .heads.base import softmax
from .heads.model_file import load_model_file, model_file_of, model_graphs
from .settings import RunSettings

CHUNK = 256  # images per step of prediction: memory stays the same however many images there are


@dataclass
class Prediction:
    """One image's answer: its top classes with probabilities, best first, and whether it shows none of them."""

    top: list  # [(class name, probability)]
    unknown: bool = False  # the image is unlike the training images: "none of these"
    unknown_score: float | None = None  # higher is less like them; None: the model has no unknown detector

    @property
    def label(self) -> str:
        """The answer in one word: the top class, or "unknown"."""
        return "unknown" if self.unknown else self.top[0][0]

    def as_dict(self) -> dict:
        """The JSON form (predict --format json, the server)."""
        out = {"label": self.label, "top": [{"class": c, "probability": round(p, 6)} for c, p in self.top]}
        if self.unknown_score is not None:
            out |= {"unknown": self.unknown, "unknown_score": round(self.unknown_score, 4)}
        return out

    def __str__(self) -> str:
        classes = ", ".join(f"{name} {p * 100:.1f}%" for name, p in self.top)
        return f"unknown: none of these (score {self.unknown_score:.2f}); nearest {classes}" if self.unknown else classes


class Predictor:
    """A saved model, loaded once: model.npz (its head; its backbone and ONNX graphs computed the codes) or a
    model.onnx from `cnncodes export` (run by ONNX Runtime alone). Calling it predicts a batch of images.
    unknown=False leaves out the model's "none of these" answer (heads/unknown.py)."""

    def __init__(self, model_path, device: str = "auto", precision: str = "auto", unknown: bool = True):
        self.path = model_file_of(model_path)
        self.device, self.precision = device, precision
        if self.path.suffix.lower() == ".onnx":
            from .export import OnnxModel

            self.head, self.onnx, self.graphs, self.unknown = None, OnnxModel(self.path), {}, None  # in the file
            self.class_names, self.backbone = self.onnx.class_names, self.onnx.recipe.get("backbone", "")
            self.threshold = self.onnx.threshold if unknown else None
            return
        self.head, self.meta = load_model_file(self.path)
        self.onnx, self.class_names, self.backbone = None, self.meta["class_names"], self.meta["backbone"]
        self.unknown = self.head.unknown_ if unknown else None
        self.threshold = None if self.unknown is None else self.unknown.threshold
        self.graphs = model_graphs(self.path, self.meta) or codes_graphs(RunSettings.from_dict(self.meta["settings"]))

    def warm(self) -> None:
        """Loads now what the first call would (the network), and the unknown score's product for a few images a call
        (UnknownDetector.prepare_few_rows): for a server, whose first requests, however many at once, find them
        ready."""
        self([])
        if self.unknown is not None:
            self.unknown.prepare_few_rows()

    @property
    def one_core_calls(self) -> bool:
        """Whether a call given cores=1 keeps to one core: where ONNX Runtime computes the answers (torch's operators,
        a backbone's or a fine-tuned head's, use every core whatever the call)."""
        return self.onnx is not None or (bool(self.graphs) and self.head.mode != "finetune")

    def __call__(self, images: Sequence, top_k: int = 5, *, cores: int | None = None) -> list:
        """For each image (a path, an (H, W, 3) uint8 array or the bytes of a file), in order: its Prediction, or
        the reason it was skipped. cores: how many the call may use (default: all; fewer images than cores then run
        each image's operators on all of them); a busy server gives 1 where `one_core_calls`."""
        if self.onnx is not None:
            proba, scores, problems = self.onnx.predict_images(images, cores)
            return _results(proba, scores if self.threshold is not None else None, problems, self.class_names, top_k,
                            self.threshold)
        options = dict(device=self.device, precision=self.precision, graphs=self.graphs, cores=cores)
        codes, problems = image_codes(self.backbone, images, **options)
        if codes.shape[0] and codes.shape[1] != self.head.input_dim:
            raise CnnCodesError(f"the model expects {self.head.input_dim}-d codes but {self.backbone} gives "
                                f"{codes.shape[1]}: the model file does not match its backbone")
        if not len(codes):
            return _results(np.zeros((0, len(self.class_names))), None, problems, self.class_names, top_k)
        features, logits = self.head.detector_inputs(codes)
        proba = softmax(logits)
        if self.meta.get("flip_average"):
            mirrored, _ = image_codes(self.backbone, [x for n, x in enumerate(images) if n not in problems],
                                      flip=True, **options)
            proba = (proba + self.head.predict_proba(mirrored)) / 2  # the same usable images, in the same order
        scores = None if self.unknown is None else self.unknown.score(features, logits)
        return _results(proba, scores, problems, self.class_names, top_k, self.threshold)


def _results(proba, scores, problems: dict, class_names: list, top_k: int, threshold: float | None = None) -> list:
    """Probabilities (and unknown scores, above `threshold` unknown) of the usable images, {position: reason} -> per
    image: its Prediction or the reason it was skipped."""
    results, rows = [], iter(range(len(proba)))
    for n in range(len(proba) + len(problems)):
        if n in problems:
            results.append(problems[n])
            continue
        row = next(rows)
        p = proba[row]
        top = [(class_names[k], float(p[k])) for k in np.argsort(-p)[:top_k]]
        if scores is None:
            results.append(Prediction(top))
        else:
            results.append(Prediction(top, bool(scores[row] > threshold), float(scores[row])))
    return results


def predict_stream(model, images: Sequence, top_k: int = 5, device: str = "auto",
                   precision: str = "auto") -> Iterator:
    """For each image in order: its Prediction, or the reason it was skipped; computed CHUNK images at a time.
    model: a model path (see Predictor), or a Predictor already loaded."""
    predictor = loaded(model, device, precision)
    for start in range(0, len(images), CHUNK):
        yield from predictor(images[start:start + CHUNK], top_k)


def loaded(model, device: str = "auto", precision: str = "auto") -> Predictor:
    """A Predictor as given, or loaded from a model path."""
    return model if isinstance(model, Predictor) else Predictor(model, device, precision)


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


def write_predictions_file(model, images: Sequence[Path], out: Path, fmt: str = "csv", top_k: int = 5,
                           device: str = "auto", precision: str = "auto", progress: bool = True) -> tuple[int, int]:
    """Stream predictions to a CSV (path, label, unknown_score, class_1, probability_1, ..., error) or JSON file,
    written atomically (a reader never sees half of it); label is the top class or "unknown". model: a model path or a loaded Predictor. Returns (predicted, skipped)."""
    from tqdm import tqdm

    if fmt not in ("csv", "json"):
        raise CnnCodesError(f"--format must be csv or json (got {fmt!r})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    predictor = loaded(model, device, precision)
    top_k = min(top_k, len(predictor.class_names))  # no empty columns beyond the classes there are
    done = skipped = 0
    with atomic_output(out) as raw, tqdm(total=len(images), unit="img", desc="predicting", disable=None if progress else True) as bar:
        f = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        rows = csv.writer(f) if fmt == "csv" else None
        if rows:
            rows.writerow(["path", "label", "unknown_score"]
                          + [f"{c}_{k}" for k in range(1, top_k + 1) for c in ("class", "probability")] + ["error"])
        else:
            f.write("[")
        for n, (path, result) in enumerate(zip(images, predict_stream(predictor, images, top_k))):
            failed = isinstance(result, str)
            skipped += failed
            done += not failed
            if rows:
                cells = [] if failed else [v for name, p in result.top for v in (name, f"{p:.6f}")]
                head = ["", ""] if failed else [result.label, "" if result.unknown_score is None
                                                else f"{result.unknown_score:.4f}"]
                rows.writerow([str(path)] + head + cells + [""] * (2 * top_k - len(cells)) + [result if failed else ""])
            else:
                item = {"path": str(path), "error": result} if failed else {"path": str(path)} | result.as_dict()
                f.write(("," if n else "") + "\n" + json.dumps(item))
            bar.update(1)
        if not rows:
            f.write("\n]\n")
        f.flush()
        f.detach()  # the file is atomic_output's to fsync and rename
    return done, skipped
