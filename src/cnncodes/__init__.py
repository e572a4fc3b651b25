"""cnncodes: transfer learning on images with frozen CNN codes and a softmax head.

Names are imported on first use, so `python -m cnncodes` can choose its memory allocator before torch loads.
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "BACKBONES": "backbones", "DEFAULT_BACKBONE": "backbones", "get_backbone": "backbones",
    "Codes": "codes.view", "CodeMatrix": "codes.matrix", "CnnCodesError": "errors", "extract_codes": "codes.extract",
    "Dataset": "data.datasets", "from_arrays": "data.datasets", "image_folder": "data.datasets", "load_dataset": "data.datasets",
    "RunSettings": "settings", "run_experiment": "pipeline", "evaluate_model": "pipeline",
    "predict_images": "predict", "Predictor": "predict", "Prediction": "predict", "make_head": "heads",
    "choose_to_label": "labeling", "Propagation": "labeling", "UnknownDetector": "heads.unknown",
    "audit_run": "pipeline", "audit_codes": "audit.issues", "export_model": "export", "similar_images": "pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'cnncodes' has no attribute {name!r}")
