"""Choose how images smaller than the network input (CIFAR-10's 32x32) are fed to it, on validation accuracy only.

    python benchmarks/choose_transform.py --data ../shared/data/cifar-10-python.tar.gz --group preprocessing
    python benchmarks/choose_transform.py --data ../shared/data/cifar-10-python.tar.gz --group size

preprocessing: squash the whole image to the input size or centre-crop it as photos are (small_crop), bicubic or
TensorFlow-1 bilinear resampling. size: the input resolution, with the registry's preprocessing. Each candidate
is scored by the tuned head trained on a seeded sample of the training split and scored on a sample of the
validation split; the test split is never read. The winners are the registry's settings
(src/cnncodes/backbones/__init__.py).
"""
import argparse

import numpy as np

from cnncodes import extract_codes, load_dataset
from cnncodes.heads import make_head

GROUPS = {
    "preprocessing": [
        ("squash, bicubic", "small_crop=none:resize=bicubic"),
        ("centre crop 0.875, bicubic", "small_crop=0.875:resize=bicubic"),
        ("squash, TF1 bilinear", "small_crop=none:resize=tf1_bilinear"),
        ("centre crop 0.875, TF1 bilinear", "small_crop=0.875:resize=tf1_bilinear"),
    ],
    # 224 px is the registry's size, the same codes as "squash, bicubic" above (and its cache)
    "size": [(f"{size} px", f"size={size}" if size != 224 else "small_crop=none:resize=bicubic")
             for size in (160, 192, 224, 256)],
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--group", choices=sorted(GROUPS), default="preprocessing")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--train", type=int, default=8000, help="training images sampled (default 8000)")
    p.add_argument("--validation", type=int, default=4000, help="validation images sampled (default 4000)")
    args = p.parse_args()
    ds = load_dataset(args.data)
    rng = np.random.default_rng(0)
    pick = np.sort(np.concatenate([rng.choice(np.flatnonzero(ds.splits == s), n, replace=False)
                                   for s, n in (("train", args.train), ("validation", args.validation))]))
    sample = ds.subset(pick)
    print(f"{args.backbone} on {ds.name}: {args.train} training / {args.validation} validation images (seed 0)")
    print(f"{args.group:<34} {'validation accuracy':>20}")
    scores, candidates = [], GROUPS[args.group]
    for label, option in candidates:
        codes = extract_codes(sample, f"{args.backbone}:{option}", progress=False)
        head = make_head("tuned").fit(*codes.part("train"), *codes.part("validation"), n_classes=len(ds.class_names))
        scores.append(head.validation_accuracy_)
        print(f"{label:<34} {scores[-1] * 100:>19.2f}%", flush=True)
    print(f"chosen by validation: {candidates[int(np.argmax(scores))][0]}")


if __name__ == "__main__":
    main()
