"""Everything that decides a code's numbers, in one place: the extraction identity names a codes store, and the
names of the ONNX graphs that compute codes are made here too. Labels, splits, file names and the other images of
a collection are not part of it: a code depends only on an image's content and on how it was computed.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

from ..data.content import file_sha256

FORMAT_VERSION = 3  # 3: content-addressed stores (rows + SQLite index)


def fingerprint(**inputs) -> str:
    """A short hash of named inputs (dataclasses by their fields)."""
    blob = json.dumps(inputs, sort_keys=True, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ExtractionIdentity:
    backbone: str
    weights: str  # the weights file's identity (Backbone.weights_id)
    preprocess: dict  # resize, crop, normalisation, flip (Backbone.preprocess)
    runtime: str  # torch, onnx, onnx-int8
    precision: str  # what torch computes in (fp32, bf16); the onnx runtimes: their graph decides
    graph: str | None  # the ONNX graph that computes the codes: its file name and a hash of its contents
    device: str  # cpu or cuda: a GPU's convolutions round differently
    width: int
    dtype: str
    format: int = FORMAT_VERSION

    def key(self) -> str:
        return fingerprint(**asdict(self))

    def folder_name(self) -> str:
        flip = "-flip" if self.preprocess.get("flip") else ""
        return f"{re.sub(r'[^A-Za-z0-9_.=+-]', '_', self.backbone)}{flip}-{self.runtime}-{self.key()}"

    def to_dict(self) -> dict:
        return asdict(self)


def extraction_identity(spec, runtime: str, precision: str, graph=None, device: str = "cpu") -> ExtractionIdentity:
    """spec: a Backbone (with its flip); graph: the codes graph of an onnx runtime (codes_graph), else None."""
    return ExtractionIdentity(
        backbone=spec.name, weights=spec.weights_id(), preprocess=vars(spec.preprocess), runtime=runtime,
        precision=precision if runtime == "torch" else ("int8" if runtime == "onnx-int8" else "fp32"),
        graph=None if graph is None else f"{graph.name}:{file_sha256(graph)[:16]}", device=device.split(":")[0],
        width=spec.feature_dim, dtype=spec.code_dtype)


def network_graph_name(spec) -> str:
    """The fp32 graph of a backbone's network (normalised NCHW input)."""
    key = fingerprint(backbone=spec.name, weights=spec.weights_id(), size=spec.preprocess.size)
    return f"{spec.name}-fp32-{key}.onnx"


def int8_graph_name(spec, calibration_keys: list[str]) -> str:
    """The int8 graph of a backbone's network, calibrated on the images of these content keys."""
    key = fingerprint(backbone=spec.name, weights=spec.weights_id(), size=spec.preprocess.size, runtime="onnx-int8",
                      calibration=calibration_keys)
    return f"{spec.name}-int8-{key}.onnx"


def pixels_graph_name(network_name: str, preprocess, dtype: str) -> str:
    """A network graph taking uint8 pixel windows (onnx_graphs.pixels_graph)."""
    key = fingerprint(graph=network_name, mean=preprocess.mean, std=preprocess.std, dtype=dtype, layout="NHWC",
                      channels=preprocess.channels)
    return f"{network_name.removesuffix('.onnx')}-pixels-{key}.onnx"
