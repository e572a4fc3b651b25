"""`cnncodes export`: a trained model as one ONNX file, uint8 pixels in, class probabilities out, that runs with
ONNX Runtime alone. The graph is three parts joined: the input (and the mirror image when the model averages over
flips), the backbone's codes graph as extraction runs it (pixels in; fp32 or int8), and the head with its
standardisation folded into its first layer, and with it the run's "none of these" detector (heads/unknown.py): the
file answers each image's class probabilities and its unknown score, whose threshold its metadata holds. Activation
maps (explain.py) need the run folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .backbones import backbone_names, get_backbone
from .errors import CnnCodesError
from .files import atomic_path
from .codes.extract import codes_graphs
from .data.images import item_reader
from .codes.inference import prepare
from .heads.model_file import load_model_file, model_file_of, model_graphs
from .codes.onnx_graphs import Session, write_onnx
from .backbones.preprocess import Preprocess
from .settings import RunSettings

METADATA_KEY = "cnncodes"


def _input_graph(size: int, flip_average: bool, backbone):
    """pixels (N, size, size, 3) uint8 -> what the backbone's codes graph takes: the pixels (with the constant 4th
    channel extraction's windows carry, Preprocess.channels), cast to float where it takes TF1-resized values, with
    their mirror images after them when the model averages flips."""
    import onnx
    from onnx import TensorProto, helper

    nodes, constants, x = [], [], "pixels"
    if flip_average:  # each node's constants beside it: a graph without the node has none left over
        nodes += [helper.make_node("Slice", ["pixels", "last", "before_first", "width_axis", "back"], ["mirrored"]),
                  helper.make_node("Concat", ["pixels", "mirrored"], ["both"], axis=0)]
        constants += [onnx.numpy_helper.from_array(np.array([v], np.int64), name) for name, v in (
            ("last", -1), ("before_first", np.iinfo(np.int64).min), ("width_axis", 2), ("back", -1))]
        x = "both"
    codes_input = backbone.graph.input[0].type.tensor_type
    dtype, channels = codes_input.elem_type, codes_input.shape.dim[3].dim_value
    if channels != 3:
        constants += [onnx.numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 0, channels - 3], np.int64), "pads"),
                      onnx.numpy_helper.from_array(np.array(255, np.uint8), "fill")]
        nodes.append(helper.make_node("Pad", [x, "pads", "fill"], ["widened"]))
        x = "widened"
    nodes.append(helper.make_node("Cast", [x], ["x"], to=dtype) if dtype != TensorProto.UINT8 else
                 helper.make_node("Identity", [x], ["x"]))
    graph = helper.make_graph(nodes, "input", [helper.make_tensor_value_info("pixels", TensorProto.UINT8,
                                                                            ["images", size, size, 3])],
                              [helper.make_tensor_value_info("x", dtype, ["images_and_mirrors", size, size, channels])],
                              constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", _opset(backbone))],
                             ir_version=backbone.ir_version)


def _answers(flip_average: bool, head, unknown):
    """codes -> class probabilities (averaged over each image and its mirror image) and, with an UnknownDetector, the
    unknown score of each image (from its own detector features and logits, as Predictor computes it), as a PyTorch
    module."""
    import torch

    class Answers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.classifier = head.torch_parts()
            if unknown is not None:  # float16 in the file; ONNX Runtime casts the constant once, at load
                self.register_buffer("reference", torch.from_numpy(np.asarray(unknown.reference, np.float16)))
                if unknown.projection is not None:
                    self.register_buffer("projection", torch.from_numpy(np.asarray(unknown.projection, np.float32)))
                self.register_buffer("center", torch.from_numpy(np.asarray(unknown.center, np.float32)))
                self.register_buffer("spread", torch.from_numpy(np.asarray(unknown.spread, np.float32)))

        def forward(self, codes):
            features = self.features(codes)
            logits = self.classifier(codes)
            proba = torch.softmax(logits, 1)
            if flip_average:
                proba = proba.view(2, -1, proba.shape[1]).mean(0)
            if unknown is None:
                return proba
            own = features[:proba.shape[0]]  # the images, not their mirror images
            unit = own / (torch.linalg.vector_norm(own, dim=1, keepdim=True) + 1e-12)
            projected = unit if unknown.projection is None else unit @ self.projection
            similarity = projected @ self.reference.float().T
            nearest = torch.topk(similarity, min(unknown.neighbour, len(unknown.reference)), 1)
            parts = torch.stack([-logits[:proba.shape[0]].max(1).values, 1 - nearest.values[:, -1]], 1)
            z = (parts - self.center) / self.spread
            return proba, torch.clamp(z[:, 0], min=0) + z[:, 1]

    return Answers()


def export_model(model_path, out, *, int8: bool = False, cache_dir=None, data=None, unknown: bool = True) -> Path:
    """Write the model at model_path (model.npz of a run, or the run folder) as one ONNX file at `out`.

    int8: the backbone statically quantised: the run's own int8 graph where it computed its codes with one, else
    calibrated on the run's training images (at `data`, default the recorded path). unknown=False leaves the "none of
    these" detector out (its reference codes are most of a small model's file); an int8 file of a run computed
    without int8 has none."""
    import onnx
    import torch

    model_file = model_file_of(model_path)
    head, meta = load_model_file(model_file)
    settings = RunSettings.from_dict(meta["settings"]).but(data=data)
    names = backbone_names(meta["backbone"])
    if len(names) > 1:
        raise CnnCodesError(f"export takes a model on one backbone; this one concatenates {', '.join(names)}, "
                            "whose inputs differ in size")
    spec = get_backbone(names[0])
    pre = spec.preprocess
    runtime = "onnx-int8" if int8 else "onnx"
    graphs = model_graphs(model_file, meta) if settings.runtime == runtime else {}
    graphs = graphs or codes_graphs(settings.but(runtime=runtime, cache_dir=cache_dir))
    backbone = onnx.load(str(graphs[spec.name]))
    flip_average = bool(meta.get("flip_average"))
    # the detector's reference codes and threshold are the run's codes: an int8 graph of a run computed without one
    # gives other codes (cosine about 0.9), so its distances would not match them
    detector = head.unknown_ if unknown and (not int8 or settings.runtime == "onnx-int8") else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def build(tmp: Path) -> None:
        last = tmp.with_suffix(".head.onnx")
        try:
            write_onnx(_answers(flip_average, head, detector), torch.zeros(2, spec.feature_dim), last, "codes",
                       ["probabilities", "unknown_score"] if detector is not None else "probabilities")
            graph = _join(_input_graph(pre.size, flip_average, backbone), backbone,
                          onnx.load(str(last)))
        finally:
            last.unlink(missing_ok=True)
        recipe = {"format": "cnncodes-onnx", "version": 1, "backbone": spec.name, "head": meta["mode"],
                  "int8": int8, "flip_average": flip_average, "class_names": meta["class_names"],
                  "input": "pixels: (N, size, size, 3) uint8 RGB, resized and cropped as preprocess says",
                  "preprocess": {k: v for k, v in vars(pre).items() if k != "flip"},
                  "unknown": None if detector is None else {"threshold": detector.threshold, "keep": detector.keep}}
        onnx.helper.set_model_props(graph, {METADATA_KEY: json.dumps(recipe)})
        onnx.save(graph, str(tmp))

    return atomic_path(build, out, overwrite=True)


def _join(pixels, backbone, probabilities):
    """One graph: the input part's x feeds the backbone, whose codes feed the head (names prefixed: no clashes)."""
    from onnx import compose

    opset = max(_opset(m) for m in (pixels, backbone, probabilities))
    first = compose.add_prefix(_at_opset(pixels, opset), "in/", rename_inputs=False)  # keeps "pixels"
    middle = compose.add_prefix(_at_opset(backbone, opset), "net/")
    last = compose.add_prefix(_at_opset(probabilities, opset), "head/", rename_outputs=False)  # "probabilities", ...
    joined = compose.merge_models(first, middle, io_map=[("in/x", "net/pixels")])
    return compose.merge_models(joined, last, io_map=[("net/codes", "head/codes")])


def _opset(model) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _at_opset(model, opset: int):
    import onnx

    if _opset(model) == opset and model.ir_version:
        return model
    return onnx.version_converter.convert_version(model, opset)


class OnnxModel:
    """An exported model: its session, class names and the preprocessing that makes its input pixels."""

    def __init__(self, path):
        self.session = Session(Path(path))
        try:
            recipe = json.loads(self.session.metadata[METADATA_KEY])
            self.class_names = list(recipe["class_names"])
            self.preprocess = Preprocess(**recipe["preprocess"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CnnCodesError(f"{path} is not a model exported by `cnncodes export` (metadata: {exc})") from None
        self.recipe = recipe

    @property
    def threshold(self) -> float | None:
        """Unknown scores above it are "none of these"; None for a file exported without the detector."""
        return (self.recipe.get("unknown") or {}).get("threshold")

    def answers(self, pixels: np.ndarray, cores: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, size, size, 3) uint8 pixels (Preprocess.pixels) -> (N, classes) probabilities, and the (N,) unknown
        scores where the file has the detector (else None). cores: see Predictor.__call__."""
        session = self.session.with_threads(cores) if cores else self.session
        outputs = session.outputs(np.ascontiguousarray(pixels, np.uint8))
        return outputs[0], outputs[1] if self.threshold is not None else None

    def predict_images(self, images: Sequence, cores: int | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Paths or (H, W, 3) uint8 arrays -> (probabilities and unknown scores of the usable ones, {position:
        reason})."""
        read = item_reader(images)
        items = [prepare(read, n, self, pixels=True) for n in range(len(images))]  # the same skips as extraction
        problems = {n: item for n, item in enumerate(items) if isinstance(item, str)}
        pixels = [item for item in items if not isinstance(item, str)]
        if not pixels:
            return np.zeros((0, len(self.class_names)), np.float32), None, problems
        return *self.answers(np.stack(pixels), cores), problems
