"""Read the tensors and plain attributes of a TorchScript archive without running any of its code.

torch.jit.load would compile and run the archive's code; torch.load(weights_only=True) refuses
TorchScript. This restricted unpickler allows only tensor rebuilding and turns every scripted
module into a plain attribute tree.
"""
from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict

import torch


class ScriptedNode:
    """One scripted module: its class name and its pickled attributes (tensors, ints, child nodes)."""

    class_name = ""

    def __init__(self):
        self.attrs: dict = {}

    def __setstate__(self, state):
        self.attrs = dict(state)

    def children(self) -> dict[str, "ScriptedNode"]:
        return {k: v for k, v in self.attrs.items() if isinstance(v, ScriptedNode)}


def _rebuild_tensor(flat, offset, size, stride, *_):
    return flat.as_strided(tuple(size), tuple(stride), offset)


def _build_intlist(values):
    return list(values)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive, self._prefix = archive, prefix

    def find_class(self, module, name):
        if module.startswith("__torch__."):
            return type(name, (ScriptedNode,), {"class_name": f"{module}.{name}"})
        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("collections", "OrderedDict"): OrderedDict,
            ("torch.jit._pickle", "build_intlist"): _build_intlist,
            ("torch", "FloatStorage"): torch.float32,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a TorchScript archive")
        return allowed[(module, name)]

    def persistent_load(self, pid):
        _, dtype, key, _, numel = pid
        raw = self._archive.read(f"{self._prefix}data/{key}")
        return torch.frombuffer(bytearray(raw), dtype=dtype)


def read_scripted_tree(path) -> ScriptedNode:
    """The root module of a TorchScript archive as a tree of ScriptedNode."""
    with zipfile.ZipFile(path) as archive:
        data_pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        prefix = data_pkl[: -len("data.pkl")]
        with archive.open(data_pkl) as f:
            return _Unpickler(f, archive, prefix).load()
