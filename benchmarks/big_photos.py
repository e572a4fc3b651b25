"""Phone-size photos: extraction with full decode against reduced (JPEG draft) decode, in one run.

    python benchmarks/big_photos.py [--photos 200] [--megapixels 12] [--repeats 2]

Builds N phone-size JPEGs (4:3, quality 90) by upscaling the 100 labelled ImageNet photos of
../shared/data/imagenet-sample (each photo twice, at two sizes around the target), then times `extract_codes` end
to end (decode, preprocess, network) on a fresh cache: once with every JPEG decoded at full size, once as shipped
(decoded at 1/2, 1/4 or 1/8 scale while both sides stay at least the network's need). Reported: median seconds,
the ratio, and the ImageNet top-1 of EfficientNet-Lite0's own classifier on the codes of each.
"""
import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def build(folder: Path, n: int, megapixels: float) -> list[int]:
    """n JPEGs of about `megapixels` (in two folders: a data set needs two classes); returns their ImageNet class
    indices, by the number in the file name."""
    wnids = [line.split("\t")[0] for line in (DATA / "synsets.tsv").read_text().splitlines()]
    files = sorted(DATA.glob("*.JPEG"))
    for half in ("a", "b"):
        (folder / half).mkdir(parents=True)
    truth = []
    for k in range(n):
        src = files[k % len(files)]
        scale = 1.0 if k < len(files) else 0.85  # the second pass: a somewhat smaller phone
        width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5 * scale))
        with Image.open(src) as im:
            im.convert("RGB").resize((width, width * 3 // 4), Image.BICUBIC).save(folder / "ab"[k % 2] / f"{k:04d}.jpg",
                                                                                  quality=90)
        truth.append(wnids.index(src.name.split("_")[0]))
    return truth


def top1(codes, truth: np.ndarray) -> float:
    import torch

    from cnncodes.backbones import load_model

    number = np.array([int(Path(i).stem) for i in codes.ids])  # ids are a/NNNN.jpg, b/NNNN.jpg
    with torch.inference_mode():
        logits = load_model("efficientnet_lite0").classify(torch.from_numpy(codes.vectors))
    return float((logits.argmax(1).numpy() == truth[number]).mean())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=200)
    p.add_argument("--megapixels", type=float, default=12.0)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    from cnncodes import extract_codes, image_folder

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = np.array(build(tmp / "data", args.photos, args.megapixels))
        shipped = image_folder(tmp / "data", test_percent=0, validation_percent=0)
        full = dataclasses.replace(shipped, keys=[k + "|full-decode" for k in shipped.keys])
        full.reader = lambda i, min_side=None, _read=shipped.reader: _read(i, None)  # ignore the reduced size
        extract_codes(shipped.subset(range(8)), "efficientnet_lite0", cache_dir=tmp / "warm", runtime="torch",
                      progress=False)
        seconds, accuracy = {"full decode": [], "reduced decode": []}, {}
        for r in range(args.repeats):
            for label, ds in (("full decode", full), ("reduced decode", shipped)):
                t = time.perf_counter()
                codes = extract_codes(ds, "efficientnet_lite0", cache_dir=tmp / f"{label}{r}", runtime="torch",
                                      progress=False)  # fresh caches: no ONNX graph export timed
                seconds[label].append(time.perf_counter() - t)
                accuracy[label] = top1(codes, truth)
        with Image.open(tmp / "data" / "a" / "0000.jpg") as im:
            size = im.size
    print(f"{args.photos} JPEGs of {size[0]} x {size[1]} and 85% of that (quality 90), efficientnet_lite0, "
          f"median of {args.repeats}")
    print(f"{'decode':<16} {'seconds':>8} {'images/s':>9} {'ImageNet top-1':>15}")
    for label in seconds:
        s = statistics.median(seconds[label])
        print(f"{label:<16} {s:>8.1f} {args.photos / s:>9.1f} {accuracy[label]:>15.3f}")
    speedup = statistics.median(seconds["full decode"]) / statistics.median(seconds["reduced decode"])
    print(f"reduced decode is {speedup:.1f}x faster end to end; top-1 "
          f"{(accuracy['reduced decode'] - accuracy['full decode']) * 100:+.1f} points")


if __name__ == "__main__":
    main()
