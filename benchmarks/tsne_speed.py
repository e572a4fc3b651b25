"""t-SNE of up to 10,000 CIFAR-10 codes: cnncodes (openTSNE, FFT) against scikit-learn's TSNE (Barnes-Hut).

    python benchmarks/tsne_speed.py [--data ../shared/data/cifar-10-python.tar.gz] [--split validation] [--n 10000]
    python benchmarks/tsne_speed.py --codes CODES/codes.npz --n 9000 --iterations 125/250,60/150 --ours-only

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
    p.add_argument("--codes", help="a codes.npz from `cnncodes extract` (instead of --data and --backbone)")
    p.add_argument("--iterations", help="EXAGGERATED/MORE pairs to compare, e.g. 125/250,60/150 (default: ours)")
    p.add_argument("--ours-only", action="store_true", help="skip openTSNE's defaults and scikit-learn")
    args = p.parse_args()

    import openTSNE
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from cnncodes import extract_codes, load_dataset
    from cnncodes.codes.view import Codes
    from cnncodes.outputs.tsne import embed, knn_accuracy, select

    codes = Codes.load(args.codes) if args.codes else extract_codes(load_dataset(args.data), args.backbone,
                                                                    progress=False)
    idx = select(codes, args.split, args.n, args.seed)
    x = PCA(50, random_state=args.seed).fit_transform(codes.vectors[idx])
    labels = codes.labels[idx]

    from cnncodes.outputs import tsne

    print(f"t-SNE of {len(x):,} {codes.backbone} codes of the {args.split} split (50-d PCA), {args.codes or args.data}")
    print(f"{'method':<34} {'seconds':>8} {'kNN acc (2-D)':>14}")
    for pair in (args.iterations or f"{tsne.EARLY_EXAGGERATION_ITER}/{tsne.N_ITER}").split(","):
        tsne.EARLY_EXAGGERATION_ITER, tsne.N_ITER = map(int, pair.split("/"))
        t = time.perf_counter()
        ours = embed(x, seed=args.seed)
        t_ours = time.perf_counter() - t
        print(f"{'cnncodes, iterations ' + pair:<34} {t_ours:>8.1f} {knn_accuracy(ours, labels):>14.3f}")
    if args.ours_only:
        return
    t = time.perf_counter()
    defaults = np.asarray(openTSNE.TSNE(n_jobs=-1, random_state=args.seed).fit(x))
    t_defaults = time.perf_counter() - t
    t = time.perf_counter()
    theirs = TSNE(random_state=args.seed, n_jobs=-1).fit_transform(x)
    t_theirs = time.perf_counter() - t

    print(f"{'openTSNE with its defaults':<34} {t_defaults:>8.1f} {knn_accuracy(defaults, labels):>14.3f}")
    print(f"{'scikit-learn TSNE (Barnes-Hut)':<34} {t_theirs:>8.1f} {knn_accuracy(theirs, labels):>14.3f}")
    print(f"speed-up: {t_theirs / t_ours:.1f}x")


if __name__ == "__main__":
    main()
