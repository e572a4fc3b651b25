"""Where fine-tuning beats the tuned head by collection size: what head "auto" decides (presets.choose_head).

    python benchmarks/auto_head.py --exact ../shared/data/cifar10-exact [--per-class 10,25,50,100,200,400] \
        [--cache-dir DIR] [--json results/auto_head.json]
    python benchmarks/auto_head.py --cifar ../shared/data/cifar-10-python.tar.gz --per-class 1000,2500

For each size, a collection of the first N training photos of each CIFAR-10 class (cifar10-exact/train, or the
official archive's training images written as PNG files; 20% of them carved out for validation, as `cnncodes run`
does) and the test photos (cifar10-exact's 1,000, or the archive's 10,000); then
`cnncodes run` with the tuned head (Lite0 codes) and with `--finetune 1` (Lite0's last block), the runtime
decided for this machine. Prints validation and test accuracy of both, the head's seconds, and what "auto" chose.
Validation decides; test accuracy is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.pipeline import run_experiment  # noqa: E402
from cnncodes.presets import choose_head  # noqa: E402
from cnncodes.settings import RunSettings  # noqa: E402


def collection(exact: Path, per_class: int, root: Path) -> Path:
    """Links to the first per_class training photos of each class, and to every test photo."""
    for split, limit in (("train", per_class), ("test", None)):
        for folder in sorted((exact / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for photo in sorted(folder.glob("*.png"))[:limit]:
                (root / split / folder.name / photo.name).symlink_to(photo.resolve())
    return root


def export_archive(archive: Path, per_class: int, root: Path) -> Path:
    """The first per_class training images of each class and every test image of the archive, as train/ and test/
    class folders of PNG files."""
    from PIL import Image

    from cnncodes.data import cifar10

    images, labels, class_names, splits = cifar10.load(archive, download=False)
    taken = dict.fromkeys(range(len(class_names)), 0)
    for n, (image, label, split) in enumerate(zip(images, labels, splits)):
        if split != "test":
            if taken[int(label)] >= per_class:
                continue
            taken[int(label)] += 1
        folder = root / ("test" if split == "test" else "train") / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{n:05d}.png")
    return root


def measure(data: Path, work: Path, cache_dir) -> dict:
    settings = RunSettings(data=str(data), cache_dir=cache_dir)
    rows = {"auto": {"head": choose_head(settings.resolved(), settings.load_data())[0].head}}
    for name, changes in (("tuned", {"head": "tuned"}),
                          ("finetune", {"head": "finetune", "backbone": "efficientnet_lite0:cut=1"})):
        result = run_experiment(settings.but(**changes), work / name, report=False, progress=False)
        rows[name] = {"validation": result.metrics["validation_accuracy"], "test": result.metrics["accuracy"],
                      "head_seconds": result.timings["head_seconds"],
                      "validation_images": result.metrics["split_sizes"]["validation"]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--exact", help="cifar10-exact: train/ and test/ class folders of PNG files")
    source.add_argument("--cifar", help="the official archive")
    parser.add_argument("--per-class", default="10,25,50,100,200,400")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    found = {"machine": platform.processor() or platform.machine(), "sizes": {}}
    print("| training photos per class | validation images | tuned: validation / test | fine-tuned: validation / "
          "test (head s) | auto chose |")
    print("|---|---|---|---|---|")
    sizes = [int(n) for n in a.per_class.split(",")]
    with tempfile.TemporaryDirectory() as exported:
        source = Path(a.exact) if a.exact else export_archive(Path(a.cifar), max(sizes), Path(exported))
        for per_class in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                rows = measure(collection(source, per_class, Path(tmp) / "data"), Path(tmp), a.cache_dir)
            report(found, per_class, rows)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(found, indent=1))


def report(found: dict, per_class: int, rows: dict) -> None:
    found["sizes"][per_class] = rows
    tuned, tuned_ft = rows["tuned"], rows["finetune"]
    print(f"| {per_class} | {tuned['validation_images']} | {100 * tuned['validation']:.1f}% / "
          f"{100 * tuned['test']:.1f}% | {100 * tuned_ft['validation']:.1f}% / {100 * tuned_ft['test']:.1f}% "
          f"({tuned_ft['head_seconds']:.0f} s) | {rows['auto']['head']} |", flush=True)


if __name__ == "__main__":
    main()
