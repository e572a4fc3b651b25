"""Heads trained on CNN codes: softmax regression (tuned, sgd), an MLP, and fine-tuned top blocks; one factory."""
from __future__ import annotations

from ..errors import CnnCodesError
from .base import Head
from .softmax import SoftmaxHead

HEADS = ("tuned", "sgd", "mlp", "finetune")


def make_head(mode: str = "tuned", *, backbone: str | None = None, seed: int = 0, normalize: str = "none",
              class_weight: str = "none", eval_every: int = 100, progress: bool = False,
              precision: str = "auto", epochs: int | None = None) -> Head:
    """The head behind --head: tuned or sgd (softmax regression), mlp, or finetune (needs backbone=NAME:cut=K;
    epochs: its schedule's length, None for its default)."""
    common = dict(seed=seed, normalize=normalize, class_weight=class_weight, progress=progress)
    if mode == "mlp":
        from .mlp import MLPHead

        return MLPHead(**common)
    if mode == "finetune":
        from .finetune import FineTuneHead

        return FineTuneHead(backbone, precision=precision, **({} if epochs is None else {"epochs": epochs}), **common)
    if mode in ("tuned", "sgd"):
        return SoftmaxHead(mode, eval_every=eval_every, **common)
    if mode == "auto":
        raise CnnCodesError("head 'auto' is decided per collection before a head is made: presets.choose_head")
    raise CnnCodesError(f"--head must be one of {', '.join(HEADS)} (got {mode!r})")


def head_from_state(meta: dict, state: dict) -> Head:
    """A trained head from the arrays and metadata of a model file."""
    mode, normalize = meta.get("mode", "tuned"), meta.get("normalize", "none")
    if mode == "finetune":
        from .finetune import FineTuneHead

        return FineTuneHead.from_state(state, meta["backbone"])
    if mode == "mlp":
        from .mlp import MLPHead

        return MLPHead.from_state(state, normalize)
    return SoftmaxHead.from_state(state, mode, normalize)
