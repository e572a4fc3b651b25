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
# The slowest training step (seconds per image, heads.finetune.step_seconds_per_image) at which head "auto"
# fine-tunes. Fine-tuning's time grows with it: at 0.59 ms a whole first run of CIFAR-10 took 4.3 minutes on 2 AMD
# EPYC cores (Zen 5), 133-144 s of it fine-tuning (benchmarks/frontier.py, median of 3), so up to about 0.75 ms the
# run stays within 5 minutes; 2 AMD EPYC cores of an older kind fine-tuned for 252 s, 7.7 minutes in all
# (docs/benchmarks.md, "A first run")
FAST_STEP_SECONDS = 0.75e-3


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
    for a head given). Fine-tuning Lite0's last block (--finetune 1) where this machine trains it fast enough for a
    first run of CIFAR-10 within 5 minutes (FAST_STEP_SECONDS, measured by a second of training steps before the
    run); the tuned head elsewhere, and where the collection is too small for fine-tuning to pay
    (FINETUNE_MIN_IMAGES) or its validation split too small to choose the fine-tuned epoch on."""
    if settings.head != "auto":
        return settings, None
    fine_tune, why = _fine_tuning_verdict(settings, dataset)
    if fine_tune:
        return (settings.but(head="finetune", backbone=f"{settings.backbone}:cut={FINETUNE_BLOCKS}"),
                f"fine-tuning the last block of {settings.backbone} ({why})")
    if settings.finetune_epochs is not None:
        raise CnnCodesError(f"--epochs sets how long fine-tuning trains, and this run does not fine-tune: {why}")
    return settings.but(head="tuned"), f"the tuned head: {why}"


def _fine_tuning_verdict(settings, dataset) -> tuple[bool, str]:
    """(whether head "auto" fine-tunes, why). Fine-tuning runs on the CPU (heads/finetune.py); its speed is measured
    last, only where everything else allows it."""
    import numpy as np

    from .codes.runtime import cpu_has_bf16, resolve_precision
    from .heads.finetune import step_seconds_per_image
    from .heads.softmax import SMALL_VALIDATION

    if settings.backbone != DEFAULT_BACKBONE:
        return False, f"fine-tuning is chosen by itself only for {DEFAULT_BACKBONE}"
    if settings.normalize != "none":
        return False, "fine-tuning takes no --normalize"
    if settings.flip:
        return False, "--flip would double fine-tuning's work (--finetune 1 --flip does both)"
    labelled = int(np.isin(dataset.splits, ["train", "validation"]).sum())
    if labelled < FINETUNE_MIN_IMAGES:
        return False, (f"{labelled:,} labelled images (train and validation) are fewer than the "
                       f"{FINETUNE_MIN_IMAGES:,} from which fine-tuning scored higher on CIFAR-10")
    validation = int((dataset.splits == "validation").sum())
    if validation < SMALL_VALIDATION:
        return False, (f"{validation} validation images are too few to choose fine-tuning's epoch on (fewer than "
                       f"{SMALL_VALIDATION}; the tuned head cross-validates)")
    if not cpu_has_bf16():
        return False, ("this CPU does not multiply bf16 natively (AVX512-BF16 or AMX), and in fp32 fine-tuning is "
                       "too slow for a first run (--finetune 1 fine-tunes anyway)")
    if resolve_precision(settings.precision, "cpu") != "bf16":
        return False, "fp32 was asked for, and fine-tuning is chosen by itself only where it trains in bf16"
    step = step_seconds_per_image(f"{settings.backbone}:cut={FINETUNE_BLOCKS}", settings.precision)
    fast = step <= FAST_STEP_SECONDS
    speed = (f"a training step of the last block took {step * 1e3:.2f} ms per image on this machine just now, "
             f"{'within' if fast else 'more than'} the {FAST_STEP_SECONDS * 1e3:.2f} at which a first run of "
             "CIFAR-10 fits 5 minutes")
    if not fast:
        return False, f"{speed} (--finetune 1 fine-tunes anyway)"
    return True, f"the collection has at least {FINETUNE_MIN_IMAGES:,} labelled images, and {speed}"
