"""The original protocol over several SGD seeds: how far the published "80% after 100 steps" and 87.7% are from
what one epoch of SGD gives, and how much of a difference the shuffle and initialisation alone make.

    python benchmarks/reproduction.py [--data ../shared/data/cifar-10-python.tar.gz] [--seeds 10]

Inception-2015 pool_3 codes (cached; extract them first), raw codes, SGD with learning rate 0.01, batches of 10,
one epoch over the training split, validation accuracy every 100 steps (the `--preset original` head). The data
splits stay fixed (seed 0); only the head's seed (initialisation and shuffle) changes.
"""
import argparse
import statistics

from cnncodes import extract_codes, load_dataset
from cnncodes.heads import SoftmaxHead


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/cifar-10-python.tar.gz")
    p.add_argument("--seeds", type=int, default=10)
    args = p.parse_args()
    codes = extract_codes(load_dataset(args.data), "inception_v3_2015", progress=False)
    at_100, final, test = [], [], []
    print(f"{'seed':>4} {'validation, step 100':>21} {'validation, end':>16} {'test':>7}")
    for seed in range(args.seeds):
        head = SoftmaxHead("sgd", eval_every=100, seed=seed).fit(*codes.part("train"), *codes.part("validation"),
                                                                 n_classes=10)
        at_100.append(next(r["validation_accuracy"] for r in head.curve_ if r["step"] == 100))
        final.append(head.validation_accuracy_)
        test.append(head.score(*codes.part("test")))
        print(f"{seed:>4} {at_100[-1] * 100:>20.1f}% {final[-1] * 100:>15.1f}% {test[-1] * 100:>6.2f}%", flush=True)
    for label, values in (("validation, step 100", at_100), ("validation, end", final), ("test", test)):
        print(f"{label}: median {statistics.median(values) * 100:.2f}%, range {min(values) * 100:.2f}-"
              f"{max(values) * 100:.2f}%")


if __name__ == "__main__":
    main()
