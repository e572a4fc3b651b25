"""Named configurations, one flag away (numbers in the README, from benchmarks/accuracy.py).

best: the configuration with the highest validation accuracy on CIFAR-10 among the 14 measured (`python
benchmarks/accuracy.py --choose-only --also results/acc_backbones.json,results/acc_options.json,results/acc_finetune.json,results/acc_best.json`):
multi-layer Lite0 codes beside Lite1, Lite2 and Inception-2015 codes, tuned head; test accuracy played no part."""
from __future__ import annotations

from .backbones import DEFAULT_BACKBONE
from .errors import CnnCodesError

BEST_BACKBONE = "efficientnet_lite0:layers=multi+efficientnet_lite1+efficientnet_lite2+inception_v3_2015"
# the codes that took CIFAR-10 furthest from few labels (benchmarks/few_labels.py; docs/benchmarks.md, "Few labels")
FEW_LABELS_BACKBONE = "efficientnet_lite0:layers=multi+efficientnet_lite1+efficientnet_lite2"

PRESETS = {
    "fast": {"backbone": DEFAULT_BACKBONE, "head": "tuned", "flip": False},
    "original": {"backbone": "inception_v3_2015", "head": "sgd", "flip": False},
    "best": {"backbone": BEST_BACKBONE, "head": "tuned", "flip": False},
}
DEFAULT = {"backbone": DEFAULT_BACKBONE, "head": "auto", "flip": False}  # no preset: the head decided per collection
FINETUNE_BLOCKS = 1  # what head "auto" fine-tunes: Lite0's last block (docs/benchmarks.md, "A first run")
# labelled images (train + validation) from which head "auto" fine-tunes: on the first N training images of each
# CIFAR-10 class, fine-tuning scored 0.7 points below the tuned head on validation at 4,000 images and 0.6 above it
# at 10,000 (`benchmarks/auto_head.py`; docs/benchmarks.md, "The head, decided per collection")
FINETUNE_MIN_IMAGES = 10_000


def resolve(preset: str | None, backbone: str | None = None, head: str | None = None, flip: bool = False,
            finetune: int | None = None) -> dict:
    """The preset's settings, with any explicitly given setting taking precedence.

    finetune=K trains the last K blocks (and the head convolution) of one EfficientNet-Lite on its cached
    activations: the backbone becomes NAME:cut=K and the head 'finetune'."""
    if preset is not None and preset not in PRESETS:
        raise CnnCodesError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    chosen = dict(PRESETS[preset] if preset else DEFAULT)
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


def choose_head(settings, dataset) -> tuple:
    """(settings, why): head "auto" made concrete for this collection and machine, and the reason in words (None
    for a head given). Fine-tuning Lite0's last block (--finetune 1) where it trains fast, on a CPU with AMX: there it
    gave the most accurate first run within 5 minutes (4.6 on 2 Xeon cores), while 2 AMD EPYC cores
    with AVX512-BF16 took 7.7 minutes for it (docs/benchmarks.md, "A first run"). The tuned head elsewhere, and where
    the collection is too small for fine-tuning to pay (FINETUNE_MIN_IMAGES) or its validation split too small to
    choose the fine-tuned epoch on."""
    if settings.head != "auto":
        return settings, None
    reason = _why_not_finetune(settings, dataset)
    if reason is None:
        return (settings.but(head="finetune", backbone=f"{settings.backbone}:cut={FINETUNE_BLOCKS}"),
                f"fine-tuning the last block of {settings.backbone} (the collection has at least "
                f"{FINETUNE_MIN_IMAGES:,} labelled images, and this CPU trains it fast)")
    if settings.finetune_epochs is not None:
        raise CnnCodesError(f"--epochs sets how long fine-tuning trains, and this run does not fine-tune: {reason}")
    return settings.but(head="tuned"), f"the tuned head: {reason}"


def _why_not_finetune(settings, dataset) -> str | None:
    """Why head "auto" does not fine-tune, or None where it does. Fine-tuning runs on the CPU (heads/finetune.py)."""
    import numpy as np

    from .codes.runtime import cpu_has_amx, resolve_precision
    from .heads.softmax import SMALL_VALIDATION

    if settings.backbone != DEFAULT_BACKBONE:
        return f"fine-tuning is chosen by itself only for {DEFAULT_BACKBONE}"
    if settings.normalize != "none":
        return "fine-tuning takes no --normalize"
    if settings.flip:
        return "--flip would double fine-tuning's work (--finetune 1 --flip does both)"
    labelled = int(np.isin(dataset.splits, ["train", "validation"]).sum())
    if labelled < FINETUNE_MIN_IMAGES:
        return (f"{labelled:,} labelled images (train and validation) are fewer than the {FINETUNE_MIN_IMAGES:,} "
                "from which fine-tuning scored higher on CIFAR-10")
    validation = int((dataset.splits == "validation").sum())
    if validation < SMALL_VALIDATION:
        return (f"{validation} validation images are too few to choose fine-tuning's epoch on (fewer than "
                f"{SMALL_VALIDATION}; the tuned head cross-validates)")
    if not cpu_has_amx():
        return ("fine-tuning is chosen by itself where it trains fast, on a CPU with AMX, which this one lacks "
                "(--finetune 1 fine-tunes anyway)")
    if resolve_precision(settings.precision, "cpu") != "bf16":
        return "fp32 was asked for, and fine-tuning is chosen by itself only where it trains in bf16"
    return None
