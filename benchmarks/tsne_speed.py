"""t-SNE of up to 10,000 CIFAR-10 codes: cnncodes (openTSNE, FFT) against scikit-learn's TSNE (Barnes-Hut).

    python benchmarks/tsne_speed.py [--data ../shared/data/cifar-10-python.tar.gz] [--split validation] [--n 10000]

The map settings (fewer iterations than openTSNE's defaults) were chosen on this comparison, so it embeds the
validation split by default, not the test split.

Both embed the same 50-d PCA of the codes (codes come from the cache; extract them first). Printed: seconds,
the ratio, and each map's class separation (leave-one-out 10-nearest-neighbour accuracy in 2-D), so speed is
not bought with a worse map.
"""
import argparse
import time

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/cifar-10-python.tar.gz")
    p.add_argument("--split", default="validation")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import openTSNE
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from cnncodes import extract_codes, load_dataset
    from cnncodes.outputs.tsne import embed, knn_accuracy, select

    codes = extract_codes(load_dataset(args.data), args.backbone, progress=False)
    idx = select(codes, args.split, args.n, args.seed)
    x = PCA(50, random_state=args.seed).fit_transform(codes.vectors[idx])
    labels = codes.labels[idx]

    t = time.perf_counter()
    ours = embed(x, seed=args.seed)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    defaults = np.asarray(openTSNE.TSNE(n_jobs=-1, random_state=args.seed).fit(x))
    t_defaults = time.perf_counter() - t
    t = time.perf_counter()
    theirs = TSNE(random_state=args.seed, n_jobs=-1).fit_transform(x)
    t_theirs = time.perf_counter() - t

    print(f"t-SNE of {len(x):,} {args.backbone} codes of the {args.split} split (50-d PCA), {args.data}")
    print(f"{'method':<34} {'seconds':>8} {'kNN acc (2-D)':>14}")
    print(f"{'cnncodes (openTSNE, FFT)':<34} {t_ours:>8.1f} {knn_accuracy(ours, labels):>14.3f}")
    print(f"{'openTSNE with its defaults':<34} {t_defaults:>8.1f} {knn_accuracy(defaults, labels):>14.3f}")
    print(f"{'scikit-learn TSNE (Barnes-Hut)':<34} {t_theirs:>8.1f} {knn_accuracy(theirs, labels):>14.3f}")
    print(f"speed-up: {t_theirs / t_ours:.1f}x")


if __name__ == "__main__":
    main()
