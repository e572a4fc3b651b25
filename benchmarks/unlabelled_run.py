"""What a collection's unlabelled images add to `cnncodes run`: the same labelled photos run with and without them.

    python benchmarks/unlabelled_run.py --exact ../shared/data/cifar10-exact [--classes cat,ship,truck]
        [--labelled 8,20] [--runtime onnx]

For each number of labelled photos per class: a folder with train/ (that many photos per class, the first ones of
cifar10-exact/train), test/ (the classes' test photos) and unlabeled/ (the classes' other training photos, names
without their class), run once with unlabeled/ and once without. Printed: the run's decision (the accuracies it
decided on, cross-validated or on validation) and test accuracy of both runs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def build(exact: Path, classes: list[str], labelled: int, root: Path, unlabelled: bool) -> Path:
    for name in classes:
        photos = sorted((exact / "train" / name).glob("*.png"))
        (root / "train" / name).mkdir(parents=True)
        for photo in photos[:labelled]:
            shutil.copy(photo, root / "train" / name / photo.name)
        shutil.copytree(exact / "test" / name, root / "test" / name)
        if unlabelled:
            (root / "unlabeled").mkdir(exist_ok=True)
            for n, photo in enumerate(photos[labelled:]):
                shutil.copy(photo, root / "unlabeled" / f"{name}-{n:05d}.png")  # the file name keeps the truth
    return root


def run(data: Path, out: Path, runtime: str) -> dict:
    cli = Path(sys.executable).with_name("cnncodes")
    done = subprocess.run([str(cli), "--quiet", "run", "--data", str(data), "--out", str(out), "--no-report",
                           "--runtime", runtime], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    return json.loads((out / "metrics.json").read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exact", required=True)
    ap.add_argument("--classes", default="cat,ship,truck")
    ap.add_argument("--labelled", default="8,20", help="labelled photos per class, comma-separated")
    ap.add_argument("--runtime", default="onnx")
    args = ap.parse_args()
    classes = args.classes.split(",")
    print("| labelled per class | unlabelled | decided on | accuracy without / with (decision) | used | test without | test with |")
    print("|---|---|---|---|---|---|---|")
    for labelled in map(int, args.labelled.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            plain = run(build(Path(args.exact), classes, labelled, tmp / "plain", False), tmp / "run_plain", args.runtime)
            both = run(build(Path(args.exact), classes, labelled, tmp / "both", True), tmp / "run_both", args.runtime)
        u = both["unlabelled"]
        if u is None:
            print(f"| {labelled} | no decision: too few labels to compare | | | | {100 * plain['accuracy']:.2f}% | "
                  f"{100 * both['accuracy']:.2f}% |")
            continue
        print(f"| {labelled} | {u['images']} | {u['chosen_on']} | {100 * u['accuracy_without']:.1f}% / "
              f"{100 * u['accuracy_with']:.1f}% | {'yes' if u['used'] else 'no'} | {100 * plain['accuracy']:.2f}% | "
              f"{100 * both['accuracy']:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
