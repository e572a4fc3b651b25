"""Named configurations, one flag away (numbers in the README, from benchmarks/accuracy.py).

best: the configuration with the highest validation accuracy on CIFAR-10 among the 14 measured (`python
benchmarks/accuracy.py --choose-only --also results/acc_backbones.json,results/acc_options.json,results/acc_finetune.json,results/acc_best.json`):
multi-layer Lite0 codes beside Lite1, Lite2 and Inception-2015 codes, tuned head; test accuracy played no part."""
from __future__ import annotations

from .backbones import DEFAULT_BACKBONE
from .errors import CnnCodesError

BEST_BACKBONE = "efficientnet_lite0:layers=multi+efficientnet_lite1+efficientnet_lite2+inception_v3_2015"

PRESETS = {
    "fast": {"backbone": DEFAULT_BACKBONE, "head": "tuned", "flip": False},
    "original": {"backbone": "inception_v3_2015", "head": "sgd", "flip": False},
    "best": {"backbone": BEST_BACKBONE, "head": "tuned", "flip": False},
}


def resolve(preset: str | None, backbone: str | None = None, head: str | None = None, flip: bool = False,
            finetune: int | None = None) -> dict:
    """The preset's settings, with any explicitly given setting taking precedence.

    finetune=K trains the last K blocks (and the head convolution) of one EfficientNet-Lite on its cached
    activations: the backbone becomes NAME:cut=K and the head 'finetune'."""
    if preset is not None and preset not in PRESETS:
        raise CnnCodesError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    chosen = dict(PRESETS[preset or "fast"])
    if backbone:
        chosen["backbone"] = backbone
    if head:
        chosen["head"] = head
    chosen["flip"] = chosen["flip"] or flip
    if finetune is not None:
        if head not in (None, "finetune"):
            raise CnnCodesError(f"--finetune trains its own head; it does not combine with --head {head}")
        if "+" in chosen["backbone"] or not chosen["backbone"].startswith("efficientnet_lite"):
            raise CnnCodesError(f"--finetune needs one EfficientNet-Lite backbone, not {chosen['backbone']!r}")
        chosen["backbone"], chosen["head"] = f"{chosen['backbone']}:cut={finetune}", "finetune"
    return chosen
