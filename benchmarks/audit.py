"""The audit against planted ground truth, and its cost.

    python benchmarks/audit.py --data ../shared/data/cifar-10-python.tar.gz [--gallery docs/audit_test_label_issues.jpg]
                               [--pairs results/audit_pair_bands.png]
    python benchmarks/audit.py --data ../shared/data/cifar10-exact

Label noise: 5% of the training and validation labels flipped to another class (seeded); recall of the flipped
images within the first 5% of the ranking (label quality, lowest first, over the same images) and precision at that
cut, and the same for cleanlab's flagged set. Duplicates (CIFAR-10 archive only): exact, resized (48 px, bicubic) and
re-encoded (JPEG, Pillow's default quality 75) copies of 1% of the training images added to the test split; the
share of each kind found as a train/test pair at each threshold, beside the number of pairs the unmodified data
gives at that threshold (the audit's own test: code cosine, or code neighbours whose grey thumbnails
correlate). Times: `audit_codes` on cached codes, the whole `cnncodes audit` command, and
`Codes.nearest` (what `cnncodes similar` searches with) per query.
"""
import argparse
import io
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from cnncodes.audit.issues import COPY_CORRELATION, audit_codes, dataset_thumbnails, grey_thumbnail
from cnncodes.codes.view import Codes
from cnncodes.data.datasets import load_dataset
from cnncodes.codes.extract import extract_codes
from cnncodes.codes.extract import image_codes

THRESHOLDS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def planted_noise(codes: Codes, share: float = 0.05, seed: int = 0) -> None:
    labelled = np.flatnonzero(codes.splits != "test")
    rng = np.random.default_rng(seed)
    flipped = rng.choice(labelled, int(round(share * len(labelled))), replace=False)
    noisy = codes.labels.copy()
    noisy[flipped] = (noisy[flipped] + rng.integers(1, len(codes.class_names), len(flipped))) % len(codes.class_names)
    t = time.perf_counter()
    result = audit_codes(Codes(codes.vectors, noisy, codes.ids, codes.splits, codes.class_names, codes.backbone))
    seconds = time.perf_counter() - t
    ranked = labelled[np.argsort(result.quality[labelled], kind="stable")][:len(flipped)]
    hit = np.isin(ranked, flipped).sum()
    flagged = result.label_issues[np.isin(result.label_issues, labelled)]
    caught = np.isin(flagged, flipped).sum()
    print(f"planted label noise: {len(flipped):,} of {len(labelled):,} labels flipped")
    print(f"  first 5% of the ranking: recall {hit / len(flipped):.3f}, precision {hit / len(ranked):.3f}")
    print(f"  cleanlab's flagged set ({len(flagged):,} images): recall {caught / len(flipped):.3f}, "
          f"precision {caught / max(1, len(flagged)):.3f}")
    print(f"  audit_codes on {len(codes.ids):,} cached codes: {seconds:.1f} s ("
          + ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()) + ")")
    return result


def copies(dataset, rows, kind: str) -> list[np.ndarray]:
    out = []
    for i in rows:
        img = Image.fromarray(dataset.read(int(i)))
        if kind == "resized":
            img = img.resize((48, 48), Image.BICUBIC)
        elif kind == "re-encoded":
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=75)
            img = Image.open(buf)
        out.append(np.asarray(img.convert("RGB")))
    return out


def planted_duplicates(dataset, codes: Codes, share: float = 0.01, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    train_rows = np.flatnonzero(codes.splits == "train")
    sources = np.sort(rng.choice(train_rows, int(round(share * len(train_rows))), replace=False))
    index = {item_id: i for i, item_id in enumerate(dataset.ids)}
    data_rows = [index[str(codes.ids[r])] for r in sources]
    kinds = ("exact", "resized", "re-encoded")
    images = {kind: copies(dataset, data_rows, kind) for kind in kinds}
    planted = [image_codes(codes.backbone, images[kind])[0] for kind in kinds]
    n, m = len(codes.ids), len(sources)
    augmented = Codes(np.vstack([codes.vectors, *planted]), np.concatenate([codes.labels] + [codes.labels[sources]] * 3),
                      np.concatenate([codes.ids] + [[f"planted/{kind}/{i}" for i in range(m)] for kind in kinds]),
                      np.concatenate([codes.splits, np.full(3 * m, "test", "<U10")]), codes.class_names, codes.backbone)
    thumbnails = np.vstack([dataset_thumbnails(dataset, codes.ids)]
                           + [np.stack([grey_thumbnail(i) for i in images[kind]]) for kind in kinds])
    result = audit_codes(augmented, thumbnails=thumbnails, threshold=min(THRESHOLDS))
    found = {tuple(p): (s, c) for p, s, c in zip(result.pairs.tolist(), result.similarity, result.correlation)}
    first = {kind: n + k * m for k, kind in enumerate(kinds)}
    print(f"\nplanted duplicates: {m:,} training images, each copied 3 ways into the test split; found by the audit "
          f"(code cosine >= threshold, or thumbnails correlating >= {COPY_CORRELATION}), and by codes alone")
    print("| threshold | " + " | ".join(f"{k} found" for k in kinds) + " | re-encoded, codes alone | train/test pairs "
          "in the unmodified data | test images in one | all pairs in the unmodified data |")
    print("|---|" + "---|" * (len(kinds) + 4))
    for t in THRESHOLDS:
        def hit(pair, codes_only=False):
            s, c = found.get(pair, (-1.0, -1.0))
            return s >= t or (not codes_only and c >= COPY_CORRELATION)

        shares = [np.mean([hit((int(src), first[kind] + k)) for k, src in enumerate(sources)]) for kind in kinds]
        alone = np.mean([hit((int(src), first["re-encoded"] + k), True) for k, src in enumerate(sources)])
        natural = [pair for pair in found if pair[1] < n and hit(pair)]
        leaks = [(a, b) for a, b in natural if (codes.splits[a] == "test") != (codes.splits[b] == "test")]
        leaked = {r for pair in leaks for r in pair if codes.splits[r] == "test"}
        print(f"| {t} | " + " | ".join(f"{f:.3f}" for f in shares) + f" | {alone:.3f} | {len(leaks):,} | "
              f"{len(leaked):,} | {len(natural):,} |")
    copies_only = [pair for pair, (s, c) in found.items() if pair[1] < n and c >= COPY_CORRELATION]
    print(f"pairs in the unmodified data found by thumbnails: {len(copies_only):,}")


def gallery(result, dataset, path: str, n: int = 100) -> None:
    """The first n test-split label issues as one picture: image, given -> suggested."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes = result.codes
    test = result.label_issues[codes.splits[result.label_issues] == "test"][:n]
    index = {item_id: i for i, item_id in enumerate(dataset.ids)}
    cols = 10
    fig, axes = plt.subplots(-(-len(test) // cols), cols, figsize=(cols * 1.5, -(-len(test) // cols) * 1.75))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), test):
        ax.imshow(dataset.read(index[str(codes.ids[r])]))
        given, suggested = codes.class_names[codes.labels[r]], codes.class_names[result.proba[r].argmax()]
        ax.set_title(f"{given}\n-> {suggested}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80, pil_kwargs={"quality": 85})
    print(f"\ngallery of the first {len(test)} test-split label issues: {path}")


def pair_bands(dataset, codes: Codes, path: str, bands=((0.75, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 0.95)),
               per_band: int = 16) -> None:
    """A seeded sample of near-duplicate pairs from each band of code similarity, one row per band, for a person to
    judge where pairs stop being the same photograph (how the default threshold was set)."""
    result = audit_codes(codes, threshold=bands[0][0])
    index = {item_id: i for i, item_id in enumerate(dataset.ids)}
    rng = np.random.default_rng(0)
    sheet = Image.new("RGB", (per_band * 70, len(bands) * 75), "white")
    for b, (lo, hi) in enumerate(bands):
        in_band = np.flatnonzero((result.similarity >= lo) & (result.similarity < hi))
        for k, n in enumerate(rng.choice(in_band, min(per_band, len(in_band)), replace=False)):
            for side, row in enumerate(result.pairs[n]):
                sheet.paste(Image.fromarray(dataset.read(index[str(codes.ids[row])])), (k * 70 + side * 33, b * 75))
    sheet.resize((sheet.width * 2, sheet.height * 2)).save(path)
    print(f"\npairs sampled per similarity band {bands} (one row each): {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--gallery", default=None, help="write the first 100 test-split label issues here (an image)")
    p.add_argument("--pairs", default=None, help="write 16 sampled near-duplicate pairs per similarity band here")
    args = p.parse_args()
    dataset = load_dataset(args.data)
    codes = extract_codes(dataset, "efficientnet_lite0", progress=False)
    planted_noise(codes)
    if len(codes.ids) >= 50000:
        planted_duplicates(dataset, codes)
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnncodes", "--quiet", "audit", "--data", args.data, "--out", out],
                       check=True, capture_output=True)
        print(f"\n`cnncodes audit --data {args.data}` (cached codes): {time.perf_counter() - t:.1f} s")
    queries = codes.vectors[np.random.default_rng(0).choice(len(codes.ids), 100, replace=False)]
    t = time.perf_counter()
    codes.nearest(queries[:1])
    prepare = time.perf_counter() - t
    times = []
    for q in queries:
        t = time.perf_counter()
        codes.nearest(q, 12)
        times.append(time.perf_counter() - t)
    print(f"Codes.nearest over {len(codes.ids):,} x {codes.vectors.shape[1]:,} codes: first call {prepare:.2f} s "
          f"(centres and normalises the matrix once), then a median {np.median(times) * 1000:.1f} ms per query")
    if args.gallery:
        gallery(audit_codes(codes), dataset, args.gallery)
    if args.pairs:
        pair_bands(dataset, codes, args.pairs)


if __name__ == "__main__":
    main()
