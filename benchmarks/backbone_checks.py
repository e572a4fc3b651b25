"""The numbers behind the backbone tests: ImageNet top-1 on the 100 sample photos (right preprocessing and ImageNet
mean/std instead), and the Inception-2015 probe on 400 / 200 exact CIFAR-10 images.

    python benchmarks/backbone_checks.py
"""
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_backbones import inception_probe_accuracy, top1  # noqa: E402  the tests' own measurements

from cnncodes import get_backbone  # noqa: E402


def main():
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        pre = get_backbone(name).preprocess
        wrong = dataclasses.replace(pre, mean=0.449 * 255, std=0.226 * 255)
        print(f"{name}: ImageNet top-1 {top1(name):.2f} (with ImageNet mean/std instead: {top1(name, wrong):.2f})")
    print(f"inception_v3_2015: probe accuracy on 200 exact CIFAR-10 test images {inception_probe_accuracy():.2f}")


if __name__ == "__main__":
    main()
