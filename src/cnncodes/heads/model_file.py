"""A trained model as one .npz: backbone name, class names, head arrays. Loaded with allow_pickle=False,
so opening a model file can never run code."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from ..files import atomic_write, npz_bytes
from ..errors import CnnCodesError
from . import head_from_state
from .unknown import UnknownDetector

FORMAT = "cnncodes-model"
FORMAT_VERSION = 4  # 2: the run's settings travel in the file; 3: and the names of its ONNX graphs (graphs/);
# 4: and the unknown detector's principal directions (read by no earlier version)


def model_file_of(path) -> Path:
    """A run folder's model.npz, or the path itself (a model.npz, or an exported model.onnx)."""
    path = Path(path)
    return path / "model.npz" if path.is_dir() else path


def save_model(path, head, settings, class_names: list[str], test_split: dict | None = None,
               graphs: dict | None = None, unknown=None) -> None:
    """settings: the RunSettings of the run that trained the head (evaluate rebuilds its splits from them);
    test_split: the size and id hash of the test split it was trained beside (evaluate checks it);
    graphs: {backbone: file name in graphs/ beside the model} of the ONNX graphs that computed its codes;
    unknown: the UnknownDetector of the run, or None."""
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "backbone": settings.backbone,
            "class_names": list(class_names), "mode": head.mode, "normalize": head.normalize,
            "flip_average": settings.flip, "settings": settings.to_dict(), "test_split": test_split,
            "graphs": graphs or {}}
    arrays = head.state() | (unknown.state() if unknown is not None else {})
    atomic_write(Path(path), npz_bytes(meta=np.array(json.dumps(meta)), **arrays))


def load_model_file(path):
    """(head, metadata); a clear error for anything that is not a model file of this version. The head carries the
    model's UnknownDetector as head.unknown_ (None when the run learnt none)."""
    path = Path(path)
    if not path.is_file():
        raise CnnCodesError(f"model file {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):  # (NumPy's own words for it suggest unpickling the file)
        raise CnnCodesError(f"{path} is not a cnncodes model file (a run's model.npz; `predict` and `serve` also "
                            "take the run folder, or a model.onnx made by `cnncodes export`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            state = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CnnCodesError(f"{path} is not a cnncodes model file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CnnCodesError(f"{path} is not a cnncodes model file")
    if meta.get("version") not in range(2, FORMAT_VERSION + 1):
        raise CnnCodesError(f"{path} is a model file of format version {meta.get('version')}; this cnncodes reads "
                            f"versions 2 to {FORMAT_VERSION}: retrain it with `cnncodes train`")
    try:
        head = head_from_state(meta, {k: v for k, v in state.items() if not k.startswith("unknown_")})
        head.unknown_ = UnknownDetector.from_state(state)
        return head, meta
    except KeyError as exc:
        raise CnnCodesError(f"{path} lacks the array {exc}: damaged or not a cnncodes model file") from None


def model_graphs(model_path, meta: dict) -> dict:
    """{backbone: graph file} of the ONNX graphs a model's codes came from (none for the torch runtime): the copies
    in graphs/ beside the model file, so prediction needs neither the training images nor the cache."""
    folder = Path(model_path).parent / "graphs"
    graphs = {name: folder / file for name, file in meta.get("graphs", {}).items()}
    for name, graph in graphs.items():
        if not graph.is_file():
            raise CnnCodesError(f"the model's ONNX graph {graph} is missing: keep the run folder's graphs/ beside "
                                "model.npz")
    return graphs
