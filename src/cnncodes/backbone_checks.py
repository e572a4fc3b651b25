"""Evidence that a backbone and its preprocessing are right, on real photos: ImageNet top-1 of the networks that
ship a classifier, and a CIFAR-10 probe for the 2015 Inception graph (which ships none). The tests set bars on
these numbers; benchmarks/backbone_checks.py prints them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data.images import load_rgb
from .backbones import get_backbone, load_model


def imagenet_sample(root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The photos of a folder of `<wnid>_<name>.JPEG` files and their class indices (synsets.tsv gives the order)."""
    root = Path(root)
    wnids = [line.split("\t")[0] for line in (root / "synsets.tsv").read_text().splitlines()]
    files = sorted(root.glob("*.JPEG"))
    return [load_rgb(f) for f in files], np.array([wnids.index(f.name.split("_")[0]) for f in files])


def imagenet_top1(name: str, root: Path, preprocess=None) -> float:
    """Top-1 accuracy of an EfficientNet-Lite's own classifier, in fp32, with the registry's preprocessing."""
    images, truth = imagenet_sample(root)
    preprocess = preprocess or get_backbone(name).preprocess
    model = load_model(name)
    with torch.inference_mode():
        logits = model.classify(model(torch.from_numpy(np.stack([preprocess(i) for i in images]))))
    return float((logits.argmax(1).numpy() == truth).mean())


def inception_probe_accuracy(cifar10_exact: Path, n_train: int = 400, n_test: int = 200) -> float:
    """A softmax probe on Inception-2015 codes of n_train exact CIFAR-10 training images, scored on n_test test
    images."""
    from .data.datasets import image_folder
    from .codes.extract import extract_codes
    from .heads import SoftmaxHead

    ds = image_folder(cifar10_exact)
    rng = np.random.default_rng(0)
    train = rng.choice(np.flatnonzero(ds.splits == "train"), n_train, replace=False)
    test = rng.choice(np.flatnonzero(ds.splits == "test"), n_test, replace=False)
    # the network as loaded, on torch: for 600 images, exporting its ONNX graph would cost more than it saves
    codes = extract_codes(ds.subset(np.concatenate([train, test])), "inception_v3_2015", runtime="torch",
                          progress=False)
    head = SoftmaxHead(c_grid=(0.01,)).fit(*codes.part("train"), n_classes=10)
    return head.score(*codes.part("test"))
