"""The numbers behind the backbone tests: ImageNet top-1 on the 100 sample photos (the registry's preprocessing,
and ImageNet mean/std instead), and the Inception-2015 probe on 400 / 200 exact CIFAR-10 images.

    python benchmarks/backbone_checks.py
"""
import dataclasses
from pathlib import Path

from cnncodes import get_backbone
from cnncodes.backbone_checks import imagenet_top1, inception_probe_accuracy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main():
    photos = DATA / "imagenet-sample"
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        pre = get_backbone(name).preprocess
        wrong = dataclasses.replace(pre, mean=0.449 * 255, std=0.226 * 255)
        print(f"{name}: ImageNet top-1 {imagenet_top1(name, photos):.2f} "
              f"(with ImageNet mean/std instead: {imagenet_top1(name, photos, wrong):.2f})")
    probe = inception_probe_accuracy(DATA / "cifar10-exact")
    print(f"inception_v3_2015: probe accuracy on 200 exact CIFAR-10 test images {probe:.2f}")


if __name__ == "__main__":
    main()
