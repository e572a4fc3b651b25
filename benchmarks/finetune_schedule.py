"""How many epochs the fine-tuned block needs: validation accuracy and time per schedule, on cached activations.

    python benchmarks/finetune_schedule.py --data ../shared/data/cifar-10-python.tar.gz --cache-dir CACHE \
        [--backbone efficientnet_lite0:cut=1] [--runtime onnx-int8] [--epochs 2,3,4,6] [--learning-rates 3e-4,1e-3]
        [--json results/ft_epochs.json]

Each row trains `FineTuneHead` with one schedule (the one-cycle learning rate spans the given epochs, so a shorter
schedule is not a prefix of a longer one; each peak learning rate given is tried with each epoch count) on the
training split, keeps its best validation epoch, and scores the test split once; then its "none of these" detector
is calibrated twice, from what fitting computed (the run's way) and by passing the rows through the tops again, each
timed. The schedule to pick is the one with the highest validation accuracy among those whose whole run fits a time
budget (docs/benchmarks.md, "A first run"); test accuracy is printed beside it, never used to choose. The
activations are computed first (or read from the cache) with the given runtime, as `cnncodes run --finetune 1
--runtime R` computes them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from inspect import signature
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.codes.extract import extract_codes  # noqa: E402
from cnncodes.data.datasets import load_dataset  # noqa: E402
from cnncodes.heads.finetune import FineTuneHead  # noqa: E402
from cnncodes.heads.unknown import UnknownDetector  # noqa: E402


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return round(time.perf_counter() - started, 1)


def numbers(text: str) -> list[float]:
    """Comma-separated numbers (argparse names this function when one is not a number)."""
    return [float(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0:cut=1")
    parser.add_argument("--runtime", default="onnx-int8")
    parser.add_argument("--epochs", default="2,3,4,6")
    default_rate = signature(FineTuneHead).parameters["learning_rate"].default
    parser.add_argument("--learning-rates", type=numbers, default=[default_rate],
                        help="peak learning rates of the one-cycle schedule, comma-separated (default: the head's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    dataset = load_dataset(args.data, cache_dir=args.cache_dir)
    codes = extract_codes(dataset, args.backbone, cache_dir=args.cache_dir, runtime=args.runtime, progress=False)
    x_train, y_train = codes.part("train")
    x_val, y_val = codes.part("validation")
    x_test, y_test = codes.part("test")
    rows = []
    schedules = [(int(e), r) for e in args.epochs.split(",") for r in args.learning_rates]
    for epochs, learning_rate in schedules:
        head = FineTuneHead(args.backbone, epochs=epochs, learning_rate=learning_rate)
        seconds = timed(lambda: head.fit(x_train, y_train, x_val, y_val, n_classes=len(codes.class_names)))
        calibration = dict(x_val=x_val, y_val=y_val, validation_unseen=True)
        from_fit = timed(lambda: UnknownDetector.fit(head, x_train, y_train, seen=head.seen_, **calibration))
        again = timed(lambda: UnknownDetector.fit(head, x_train, y_train, **calibration))
        rows.append({"epochs": epochs, "learning_rate": learning_rate, "seconds": seconds,
                     "validation_accuracy": head.validation_accuracy_, "test_accuracy": head.score(x_test, y_test),
                     "curve": [c["validation_accuracy"] for c in head.curve_],
                     "detector_seconds": {"from_fit": from_fit, "passing_again": again}})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| epochs | learning rate | seconds | validation | test | validation after each epoch (0: the linear "
          "probe) | detector seconds: from fitting / passing again |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        curve = ", ".join(f"{v:.2%}" for v in r["curve"])
        detector = r["detector_seconds"]
        print(f"| {r['epochs']} | {r['learning_rate']:g} | {r['seconds']:.0f} | {r['validation_accuracy']:.2%} "
              f"| {r['test_accuracy']:.2%} "
              f"| {curve} | {detector['from_fit']:.1f} / {detector['passing_again']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"backbone": args.backbone, "runtime": args.runtime, "rows": rows},
                                              indent=1))


if __name__ == "__main__":
    main()
