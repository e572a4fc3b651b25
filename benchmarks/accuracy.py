"""Validation and test accuracy of configurations on cached codes; the choice is made on validation only.

    python benchmarks/accuracy.py --data ../shared/data/cifar-10-python.tar.gz --suite backbones
    python benchmarks/accuracy.py --data ../shared/data/cifar-10-python.tar.gz --suite options
    python benchmarks/accuracy.py --data ../shared/data/cifar-10-python.tar.gz --suite best --json results/acc_best.json
    python benchmarks/accuracy.py --data ../shared/data/cifar-10-python.tar.gz --choose-only \
        --also results/acc_backbones.json,results/acc_options.json,results/acc_finetune.json,results/acc_best.json

Each row is one `run_experiment` (the same as `cnncodes run --no-report`; extract the codes first with
extract_all.py, whose timings file gives the extraction column). The validation column is the accuracy on the
validation split of the model the head chose, trained on the training split (tuned: the C chosen on the search
sample, fitted on all training rows; sgd: after its epoch; mlp and finetune: the best epoch); the last line names
the configuration with the highest validation accuracy. Test accuracy is printed beside it, never used to choose.
"""
import argparse
import json
from pathlib import Path

from cnncodes.pipeline import run_experiment
from cnncodes.settings import RunSettings

L0, L1, L2, INC = "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "inception_v3_2015"
MULTI = ":layers=multi"

SUITES = {
    # (label, backbone, head, flip, normalize)
    "backbones": [(f"{b}, {h}", b, h, False, "none") for b in (INC, L0, L1, L2) for h in ("sgd", "tuned")],
    "options": [
        ("Lite0 tuned (default)", L0, "tuned", False, "none"),
        ("+ flipped codes", L0, "tuned", True, "none"),
        ("+ sqrt normalisation", L0, "tuned", False, "sqrt"),
        ("+ multi-layer codes", L0 + MULTI, "tuned", False, "none"),
        ("+ MLP head", L0, "mlp", False, "none"),
        ("+ fine-tuned last block (--finetune 1 --epochs 6)", f"{L0}:cut=1", "finetune", False, "none"),
        ("Inception-2015 tuned", INC, "tuned", False, "none"),
    ],
    # more candidates for --preset best (the choice runs over these and the rows given with --also)
    "best": [
        ("multi-layer Lite0 + Lite1 + Lite2", f"{L0}{MULTI}+{L1}+{L2}", "tuned", False, "none"),
        ("multi-layer Lite0 + Lite1 + Lite2 + Inception", f"{L0}{MULTI}+{L1}+{L2}+{INC}", "tuned", False, "none"),
    ],
}


def extraction_seconds(times: dict, dataset: str, backbone: str, flip: bool):
    total = 0.0
    for name in backbone.split("+"):
        for key in [f"{dataset}/{name}"] + ([f"{dataset}/{name}/flip"] if flip else []):
            if key not in times:
                return None
            total += times[key]["seconds"]
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--suite", choices=sorted(SUITES), default="backbones")
    p.add_argument("--times", default="results/extract_times.json")
    p.add_argument("--runs", default="results/runs", help="run directories go here")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--rows", default=None, help="only these rows of the suite, 1-based, e.g. 1,2,5")
    p.add_argument("--also", default="", help="JSON files of earlier runs of this script whose rows join the choice")
    p.add_argument("--choose-only", action="store_true", help="run no configuration: choose among the --also rows")
    args = p.parse_args()
    suite = [] if args.choose_only else SUITES[args.suite]
    if args.rows and suite:
        suite = [suite[int(n) - 1] for n in args.rows.split(",")]
    times = json.loads(Path(args.times).read_text()) if Path(args.times).exists() else {}
    rows = []
    if suite:
        print("| configuration | backbone | head | flip | validation | test | extraction (s) | head training (s) |")
        print("|---|---|---|---|---|---|---|---|")
    for label, backbone, head, flip, normalize in suite:
        out = Path(args.runs) / Path(args.data).name / label.replace(" ", "_").replace("/", "_").replace(",", "")
        epochs = 6 if head == "finetune" else None  # the fine-tuning row of docs/benchmarks.md's options table
        r = run_experiment(RunSettings(data=args.data, backbone=backbone, head=head, flip=flip, normalize=normalize,
                                       finetune_epochs=epochs), out, report=False, progress=False)
        ext = extraction_seconds(times, r.metrics["dataset"], backbone, flip)
        row = {"label": label, "backbone": backbone, "head": head, "flip": flip, "normalize": normalize,
               "validation": r.metrics["validation_accuracy"], "test": r.metrics["accuracy"],
               "extraction_seconds": ext, "head_seconds": r.timings["head_seconds"]}
        rows.append(row)
        print(f"| {label} | `{backbone}` | {head}{'' if normalize == 'none' else ', ' + normalize} | "
              f"{'yes' if flip else 'no'} | {row['validation'] * 100:.2f}% | {row['test'] * 100:.2f}% | "
              f"{'-' if ext is None else f'{ext:.0f}'} | {row['head_seconds']:.0f} |", flush=True)
    earlier = [row for path in filter(None, args.also.split(",")) for row in json.loads(Path(path).read_text())]
    chosen = max(rows + earlier, key=lambda r: r["validation"])
    print(f"\nchosen by validation among {len(rows + earlier)} configurations: {chosen['label']} "
          f"(validation {chosen['validation'] * 100:.2f}%, test {chosen['test'] * 100:.2f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
