"""The numbers behind the backbone tests: ImageNet top-1 on the 100 sample photos (right preprocessing and ImageNet
mean/std instead), and the Inception-2015 probe on 400 / 200 exact CIFAR-10 images.

    python benchmarks/backbone_checks.py
"""
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_backbones import top1  # noqa: E402  the tests' own measurement, printed

from cnncodes import get_backbone  # noqa: E402


def inception_probe() -> float:
    import numpy as np

    from cnncodes import extract_codes, image_folder
    from cnncodes.head import SoftmaxHead
    from tests.conftest import need_shared

    ds = image_folder(need_shared("cifar10-exact"))
    rng = np.random.default_rng(0)
    train = rng.choice(np.flatnonzero(ds.splits == "train"), 400, replace=False)
    test = rng.choice(np.flatnonzero(ds.splits == "test"), 200, replace=False)
    codes = extract_codes(ds.subset(np.concatenate([train, test])), "inception_v3_2015", progress=False)
    head = SoftmaxHead(c_grid=(0.01,)).fit(*codes.part("train"), n_classes=10)
    return head.score(*codes.part("test"))


def main():
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        pre = get_backbone(name).preprocess
        wrong = dataclasses.replace(pre, mean=0.449 * 255, std=0.226 * 255)
        print(f"{name}: ImageNet top-1 {top1(name):.2f} (with ImageNet mean/std instead: {top1(name, wrong):.2f})")
    print(f"inception_v3_2015: probe accuracy on 200 exact CIFAR-10 test images {inception_probe():.2f}")


if __name__ == "__main__":
    main()
