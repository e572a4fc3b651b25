"""Test accuracy of configurations on cached codes, as a Markdown table (extract codes first with extract_all.py).

    python benchmarks/accuracy.py --data ../shared/data/cifar10-exact --suite backbones
    python benchmarks/accuracy.py --data ../shared/data/cifar10 --suite options --times results/extract_times.json

Each row is one `run_experiment` (the same as `cnncodes run --no-report`); extraction time comes from the
timings file written by extract_all.py (codes are cached, so the run itself only trains and evaluates).
"""
import argparse
import json
from pathlib import Path

from cnncodes.pipeline import run_experiment
from cnncodes.presets import PRESETS

L0, L1, L2, INC = "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "inception_v3_2015"
MULTI = ":layers=multi"
INC_BICUBIC = INC + ":resize=bicubic"

SUITES = {
    # (label, backbone, head, flip, normalize)
    "backbones": [(f"{b}, {h}", b, h, False, "none") for b in (INC, L0, L1, L2) for h in ("sgd", "tuned")],
    "resolution": [(f"Lite0 at {size} px", f"{L0}:size={size}" if size != 224 else L0, "tuned", False, "none")
                   for size in (160, 192, 224, 256)],
    # the options whose codes fit this session's time on the 60,000-image JPEG copy
    "options-jpeg": [
        ("Lite0 tuned (default)", L0, "tuned", False, "none"),
        ("+ flipped codes", L0, "tuned", True, "none"),
        ("+ sqrt normalisation", L0, "tuned", False, "sqrt"),
        ("+ MLP head", L0, "mlp", False, "none"),
        ("Lite0 + Lite1 + Lite2 + Inception", f"{L0}+{L1}+{L2}+{INC}", "tuned", False, "none"),
        ("Lite0 + Lite1 + Lite2 + Inception, MLP head", f"{L0}+{L1}+{L2}+{INC}", "mlp", False, "none"),
    ],
    "finetune": [
        ("Lite0, fine-tune last block + head conv (--finetune 1)", f"{L0}:cut=1", "finetune", False, "none"),
        ("Lite0, --finetune 1 --flip", f"{L0}:cut=1", "finetune", True, "none"),
    ],
    "options": [
        ("Lite0 tuned (default)", L0, "tuned", False, "none"),
        ("+ flipped codes", L0, "tuned", True, "none"),
        ("+ sqrt normalisation", L0, "tuned", False, "sqrt"),
        ("+ multi-layer codes", L0 + MULTI, "tuned", False, "none"),
        ("+ MLP head", L0, "mlp", False, "none"),
        ("+ fine-tuned last block (--finetune 1)", f"{L0}:cut=1", "finetune", False, "none"),
        ("Inception-2015 tuned", INC, "tuned", False, "none"),
        ("+ bicubic upsampling", INC_BICUBIC, "tuned", False, "none"),
        ("+ flipped codes", INC_BICUBIC, "tuned", True, "none"),
        ("Lite0 + Lite2 + Inception, flip", f"{L0}+{L2}+{INC}", "tuned", True, "none"),
        ("multi-layer Lite0, Lite2 + bicubic Inception, flip", f"{L0}{MULTI}+{L2}{MULTI}+{INC_BICUBIC}",
         "tuned", True, "none"),
        ("--preset best (adds multi-layer Lite1)", PRESETS["best"]["backbone"], "tuned", True, "none"),
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
    p.add_argument("--json", default=None)
    p.add_argument("--rows", default=None, help="only these rows of the suite, 1-based, e.g. 1,2,5")
    args = p.parse_args()
    suite = SUITES[args.suite]
    if args.rows:
        suite = [suite[int(n) - 1] for n in args.rows.split(",")]
    times = json.loads(Path(args.times).read_text()) if Path(args.times).exists() else {}
    dataset = Path(args.data).name
    rows = []
    print("| configuration | backbone | head | flip | test accuracy | extraction (s) | head training (s) |")
    print("|---|---|---|---|---|---|---|")
    for label, backbone, head, flip, normalize in suite:
        out = Path(args.runs) / dataset / label.replace(" ", "_").replace("/", "_").replace(",", "")
        r = run_experiment(args.data, backbone, out, head, flip=flip, normalize=normalize, report=False, progress=False)
        ext = extraction_seconds(times, dataset, backbone, flip)
        row = {"label": label, "backbone": backbone, "head": head, "flip": flip, "normalize": normalize,
               "accuracy": r.metrics["accuracy"], "extraction_seconds": ext, "head_seconds": r.timings["head_seconds"]}
        rows.append(row)
        print(f"| {label} | `{backbone}` | {head}{'' if normalize == 'none' else ', ' + normalize} | "
              f"{'yes' if flip else 'no'} | {row['accuracy'] * 100:.1f}% | {'-' if ext is None else f'{ext:.0f}'} | "
              f"{row['head_seconds']:.0f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
