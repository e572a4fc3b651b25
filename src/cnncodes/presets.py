"""Named configurations, one flag away (numbers in the README, from benchmarks/accuracy.py)."""
from __future__ import annotations

from .backbones import DEFAULT_BACKBONE
from .errors import CnnCodesError

_BEST = "+".join(["efficientnet_lite0:layers=multi", "efficientnet_lite1:layers=multi",
                  "efficientnet_lite2:layers=multi", "inception_v3_2015:resize=bicubic"])

PRESETS = {
    "fast": {"backbone": DEFAULT_BACKBONE, "head": "tuned", "flip": False},
    "original": {"backbone": "inception_v3_2015", "head": "sgd", "flip": False},
    "best": {"backbone": _BEST, "head": "tuned", "flip": True},
}


def resolve(preset: str | None, backbone: str | None = None, head: str | None = None, flip: bool = False) -> dict:
    """The preset's settings, with any explicitly given setting taking precedence."""
    if preset is not None and preset not in PRESETS:
        raise CnnCodesError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    chosen = dict(PRESETS[preset or "fast"])
    if backbone:
        chosen["backbone"] = backbone
    if head:
        chosen["head"] = head
    chosen["flip"] = chosen["flip"] or flip
    return chosen
