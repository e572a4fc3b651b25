"""Networks as ONNX graphs run by ONNX Runtime, fp32 or statically quantised to int8.

Why a second runtime: ONNX Runtime's fp32 kernels ran EfficientNet-Lite0 faster than PyTorch's bf16 loop on our
CPUs (benchmarks/extract_speed.py), and a graph file deploys without PyTorch.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np

from . import runtime as process
from ..errors import CnnCodesError
from ..files import atomic_path

# images per ONNX Runtime run: the activations of a few images stay in the CPU's caches. `benchmarks/extract_parts.py
# --run-sizes` (docs/benchmarks.md, Speed), int8, one-threaded runs on both of 2 cores: Intel Xeon 406 images/s in runs
# of 4, 401 of 8, 365 of 16 (2 not measured); AMD EPYC (Zen 5) 922 of 4, 944 of 2, 856 of 8 (fp32 there: 331 of 4,
# 374 of 2)
RUN_IMAGES = 4
# int8: every operator between the pixels and the codes is quantised, so that no float padding or activation sits
# between the int8 convolutions; the head stays float (its MatMul/Gemm are not listed): its weights are small and
# its precision is the accuracy.
INT8_OPERATORS = ["Conv", "Pad", "Clip", "Relu", "Add", "Mul", "Sub", "Div", "Transpose", "ReduceMean",
                  "GlobalAveragePool", "Concat", "Reshape", "Flatten", "MaxPool", "AveragePool", "Resize"]


def check_runtime(name: str) -> str:
    if name not in process.RUNTIMES:
        raise CnnCodesError(f"--runtime must be one of {', '.join(process.RUNTIMES)} (got {name!r})")
    if name != "torch":
        _require()
    return name


def _require():
    """Both packages present (found, not imported: a command whose graphs are cached never loads onnx)."""
    import importlib.util

    if not all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime")):
        raise CnnCodesError("ONNX export and the onnx runtimes need ONNX Runtime: pip install 'cnncodes[onnx]' "
                            "(or pip install onnx onnxruntime onnxscript)")


def write_onnx(module, example, path: Path, input_name: str, output_name: str | list[str]) -> None:
    """Trace the module on an example batch into an ONNX graph whose batch axis is free (output_name: a list where
    the module returns several tensors)."""
    import torch

    _require()
    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns about torchvision operators it skips
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # and reports its steps on stdout
        warnings.simplefilter("ignore")
        try:
            outputs = [output_name] if isinstance(output_name, str) else output_name
            torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name], output_names=outputs,
                              dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)
        except Exception as exc:  # the exporter raises many types; the message is what a user can act on
            raise CnnCodesError(f"this network cannot be exported to ONNX: {str(exc).splitlines()[0]}") from None
        finally:
            quiet.setLevel(level)


def quantize_int8(src: Path, dst: Path, batches: Iterable[np.ndarray], input_name: str) -> None:
    """Static int8 quantisation, QDQ format, per-channel weights, activation ranges from the calibration batches."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared))
        quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=INT8_OPERATORS)


class Session:
    """One ONNX Runtime session run as `threads` single-threaded runs at once, each on its own images: array in,
    first output (or all of them) out.

    Why not ONNX Runtime's operator threads: they wait for each other at the end of every operator (and for the
    cores the decoding threads hold), while runs on different images never wait (benchmarks/extract_parts.py).
    Only a batch of fewer images than cores (a server's lone image) runs as one call whose operators use every
    core, on a second session built on first use. Every image's codes are the same either way, bit for bit
    (tests/test_export.py)."""

    def __init__(self, graph: Path | bytes, threads: int | None = None):
        """graph: a file, or its bytes (what Ray ships to its workers); threads: the CPUs it may use (default: all
        this process may use; a Ray actor gets its share)."""
        _require()
        self.graph, self.loaded = graph, _stamp(graph)
        self.session = ort_session(graph, operator_threads=1)
        self.threads = threads or process.cpu_count()
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._spread = {}  # operator threads -> the session whose operators use them (shared by with_threads' views)

    def with_threads(self, threads: int) -> "Session":
        """The same session (one copy of the weights) run `threads` at a time: 1 for callers that run it from
        several threads themselves (inference.encode's workers)."""
        view = copy.copy(self)
        view.threads = threads
        return view

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.outputs(batch)[0]

    def outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the graph for the batch, in the graph's order; a batch of fewer images than `threads`
        runs as one call whose operators use them all."""
        wide = self._spread_session() if 1 < self.threads and len(batch) < self.threads else None
        if wide is not None:
            return wide.run(None, {self.input_name: batch})
        size = max(1, min(RUN_IMAGES, -(-len(batch) // self.threads)))  # every core a run, when there are enough
        parts = [batch[s:s + size] for s in range(0, len(batch), size)] or [batch]
        if self.threads == 1 or len(parts) == 1:
            done = [self._run(part) for part in parts]
        else:
            with ThreadPoolExecutor(min(self.threads, len(parts))) as pool:  # ONNX Runtime releases the GIL in runs
                done = list(pool.map(self._run, parts))
        return [np.concatenate(output) for output in zip(*done)]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: batch})

    def _spread_session(self):
        """The graph as loaded, its operators on `threads` threads; None where its file has changed or gone since
        (a server must not mix two graphs: its batches then run without spreading)."""
        if self.threads not in self._spread:
            same = self.loaded is None or _stamp(self.graph) == self.loaded
            self._spread[self.threads] = ort_session(self.graph, operator_threads=self.threads) if same else None
        return self._spread[self.threads]


def _stamp(graph: Path | bytes) -> tuple | None:
    """A graph file's size and modification time: None for bytes, () for a file that is gone."""
    if isinstance(graph, bytes):
        return None
    try:
        info = Path(graph).stat()
    except OSError:
        return ()
    return info.st_size, info.st_mtime_ns


def ort_session(graph: Path | bytes, operator_threads: int):
    """An ONNX Runtime session on the CPU whose operators run on `operator_threads` threads. They spin a while after
    each operator and each run (ONNX Runtime's default), so a session with several runs only where nothing else needs
    the cores: threads that sleep wake up late for the next operator, and on a busy machine for the next run too
    (docs/benchmarks.md, "The prediction server under load")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = operator_threads, 1
    options.log_severity_level = 3  # ONNX Runtime's warnings are about its own graph rewrites
    ort.set_default_logger_severity(3)  # (unused initializers it removes are reported by the default logger)
    try:
        return ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # InvalidProtobuf, NoSuchFile, Fail...: onnxruntime's own exception types
        where = "the graph" if isinstance(graph, bytes) else graph
        raise CnnCodesError(f"{where} is not an ONNX model ONNX Runtime can run ({str(exc).splitlines()[0]})") from None


CALIBRATION_IMAGES = 256  # training images whose activation ranges set the int8 scales


REUSE_OVERLAP = 0.9  # share of a cached int8 graph's calibration images the collection must still hold (codes_graph)


def codes_graph(spec, runtime: str, cache_dir: Path, calibration) -> Path | None:
    """The ONNX graph a runtime runs for a backbone (pixel windows in, codes out, see pixels_graph), built once into
    the cache; None for the torch runtime. calibration (int8 only): .keys, the content keys of its images,
    .collection, those of every image of the collection, and calling it yields batches of normalised network inputs,
    only when a graph is built.

    An int8 graph of the cache is reused while the collection still holds REUSE_OVERLAP of the images it was
    calibrated on, and those were nearly as many as a calibration would take now: a new graph changes every code, so
    a collection that grows, is relabelled or loses a few images keeps its graph and computes only its new images;
    one that grows from fewer images than a calibration takes is calibrated again (its few codes are cheap)."""
    import json

    from ..backbones import load_model
    from .identity import int8_graph_name, network_graph_name

    if check_runtime(runtime) == "torch":
        return None
    size = spec.preprocess.size
    folder = Path(cache_dir) / "onnx"

    def export(tmp: Path) -> None:
        import torch

        write_onnx(load_model(spec.name), torch.zeros(2, 3, size, size), tmp, "x", "codes")

    fp32 = atomic_path(export, folder / network_graph_name(spec))
    if runtime == "onnx":
        return pixels_graph(fp32, spec.preprocess)
    if calibration is None:
        raise CnnCodesError("an int8 graph needs calibration images: give the run's data (--data)")
    wanted, present = set(calibration.keys), calibration.collection
    for sidecar in sorted(folder.glob(f"{spec.name}-int8-*.keys.json")):
        graph = sidecar.with_name(sidecar.name.removesuffix(".keys.json") + ".onnx")
        try:
            made = json.loads(sidecar.read_text())
            used = set(made["calibration"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if graph.exists() and made.get("network") == fp32.name and \
                len(used & present) >= REUSE_OVERLAP * max(len(wanted), len(used)):
            return pixels_graph(graph, spec.preprocess)
    graph = folder / int8_graph_name(spec, calibration.keys)
    atomic_path(lambda tmp: quantize_int8(fp32, tmp, calibration(), "x"), graph)
    from ..files import write_json

    write_json(graph.with_name(graph.stem + ".keys.json"), {"network": fp32.name, "calibration": sorted(calibration.keys)})
    return pixels_graph(graph, spec.preprocess)


def pixels_graph(network: Path, preprocess) -> Path:
    """The graph `network` (normalised NCHW float input "x") taking Preprocess.window's batches instead:
    (N, size, size, channels) pixels, uint8 for bicubic resizing. A uint8 batch is a quarter of the float one to
    stack, and no float pass runs in Python. The graph normalises in the same float32 arithmetic (bit-identical
    codes); where an int8 graph's input quantisation maps each pixel value to itself, the pixels go straight to it,
    a 4th channel included (its first convolutions get zero weights for it); elsewhere the 4th channel is dropped."""
    from .identity import pixels_graph_name

    dtype = np.dtype(preprocess.pixel_dtype)

    def build(tmp: Path) -> None:
        import onnx

        onnx.save(_pixel_input(onnx.load(str(network)), preprocess.mean, preprocess.std, dtype, preprocess.channels),
                  str(tmp))

    return atomic_path(build, network.with_name(pixels_graph_name(network.name, preprocess, dtype.name)))


def _pixel_input(model, mean: float, std: float, dtype: np.dtype, channels: int):
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    x = graph.input[0]
    batch, _, height, width = x.type.tensor_type.shape.dim
    pixels = helper.make_tensor_value_info("pixels", TensorProto.UINT8 if dtype == np.uint8 else TensorProto.FLOAT,
                                           [batch.dim_param or batch.dim_value, height.dim_value, width.dim_value,
                                            channels])
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    readers = [n for n in graph.node if x.name in n.input]
    quantize = readers[0] if len(readers) == 1 and readers[0].op_type == "QuantizeLinear" else None
    straight = dtype == np.uint8 and quantize is not None and _maps_pixels_to_themselves(
        mean, std, constants[quantize.input[1]], constants[quantize.input[2]])
    direct = straight and (channels == 3 or _widen_first_convolutions(graph, constants, quantize.output[0], channels))
    nodes, source = [], "pixels"
    if channels != 3 and not direct:  # the graph takes RGB: the 4th channel goes
        graph.initializer.extend([numpy_helper.from_array(np.array([v], np.int64), f"pixels_{k}")
                                  for k, v in (("start", 0), ("stop", 3), ("axis", 3))])
        nodes.append(helper.make_node("Slice", ["pixels", "pixels_start", "pixels_stop", "pixels_axis"], ["pixels_rgb"]))
        source = "pixels_rgb"
    nodes.append(helper.make_node("Transpose", [source], ["pixels_nchw"], perm=[0, 3, 1, 2]))
    if direct:
        for node in graph.node:
            node.input[:] = ["pixels_nchw" if name == quantize.output[0] else name for name in node.input]
        graph.node.remove(quantize)
    else:
        graph.initializer.extend([numpy_helper.from_array(np.array(mean, np.float32), "pixels_mean"),
                                  numpy_helper.from_array(np.array(std, np.float32), "pixels_std")])
        nodes += [helper.make_node("Cast", ["pixels_nchw"], ["pixels_float"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["pixels_float", "pixels_mean"], ["pixels_centred"]),
                  helper.make_node("Div", ["pixels_centred", "pixels_std"], [x.name])]
    for k, node in enumerate(nodes):
        graph.node.insert(k, node)
    graph.input.remove(x)
    graph.input.insert(0, pixels)
    return model


def _widen_first_convolutions(graph, constants: dict, quantized_input: str, channels: int) -> bool:
    """Give the convolutions that read the quantised input `channels` input channels, the new ones with weights equal
    to their zero points (zero once dequantised: the integer sums do not change). False, and nothing changed, where
    the graph is not DequantizeLinear -> Conv with constant quantised weights."""
    from onnx import numpy_helper

    producer = {out: node for node in graph.node for out in node.output}
    dequantize = [n for n in graph.node if quantized_input in n.input]
    convs = [n for d in dequantize for n in graph.node if d.output[0] in n.input]
    weights = [producer.get(c.input[1]) for c in convs]
    if not dequantize or any(d.op_type != "DequantizeLinear" for d in dequantize) or \
            any(c.op_type != "Conv" or c.input[0] not in [d.output[0] for d in dequantize] for c in convs) or \
            any(w is None or w.op_type != "DequantizeLinear" or w.input[0] not in constants for w in weights):
        return False
    for w in weights:
        q = constants[w.input[0]]
        zero = constants[w.input[2]] if len(w.input) > 2 else np.zeros(q.shape[0], q.dtype)
        extra = np.broadcast_to(np.reshape(zero, (-1, 1, 1, 1)), (q.shape[0], channels - q.shape[1], *q.shape[2:]))
        name, old = f"{w.input[0]}_widened", w.input[0]
        graph.initializer.append(numpy_helper.from_array(np.concatenate([q, extra.astype(q.dtype)], axis=1), name))
        w.input[0] = name
        if not any(old in n.input for n in graph.node):
            graph.initializer.remove(next(t for t in graph.initializer if t.name == old))
    for info in [v for v in graph.value_info if v.name in {w.output[0] for w in weights}]:
        graph.value_info.remove(info)
    return True


def _maps_pixels_to_themselves(mean: float, std: float, scale: np.ndarray, zero_point: np.ndarray) -> bool:
    """Whether QuantizeLinear((p - mean) / std) == p for every uint8 p, as float32 division or multiplication."""
    p = np.arange(256, dtype=np.float32)
    x = (p - np.float32(mean)) / np.float32(std)
    scale = np.float32(scale)
    return all(np.array_equal(np.clip(np.rint(y) + np.int32(zero_point), 0, 255), p)
               for y in (x / scale, x * (np.float32(1) / scale)))
