"""'None of these' on a small collection of real photos: 60 CIFAR-10 photos of each of automobile, bird and ship
(the first 60 of each in cifar10-exact/train), `cnncodes run`, then the test photos of those classes against those of
frog, horse and deer, which the run never saw.

    python benchmarks/unknown_small.py --exact ../shared/data/cifar10-exact [--cache-dir DIR]

Reports the AUROC of the unknown score and the shares called unknown, for the default calibration (cross-fitted
over all labelled photos, as below 100 validation images) and for calibration on the run's few validation photos.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnncodes.heads import unknown  # noqa: E402
from cnncodes.pipeline import run_experiment  # noqa: E402
from cnncodes.predict import Predictor, list_images  # noqa: E402

KNOWN, UNSEEN = ("automobile", "bird", "ship"), ("frog", "horse", "deer")


def measure(exact: Path, work: Path, cache_dir) -> dict:
    from sklearn.metrics import roc_auc_score

    run_experiment(data=work / "data", out=work / "run", report=False, progress=False, cache_dir=cache_dir)
    predictor = Predictor(work / "run")
    known = predictor(list_images([exact / "test" / n for n in KNOWN]))
    unseen = predictor(list_images([exact / "test" / n for n in UNSEEN]))
    k, u = [p.unknown_score for p in known], [p.unknown_score for p in unseen]
    return {"known": len(k), "unseen": len(u), "auroc": roc_auc_score([0] * len(k) + [1] * len(u), k + u),
            "known_called_unknown": float(np.mean([p.unknown for p in known])),
            "unseen_called_unknown": float(np.mean([p.unknown for p in unseen]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exact", required=True)
    parser.add_argument("--cache-dir", default=None)
    a = parser.parse_args()
    exact = Path(a.exact)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in KNOWN:
            shutil.copytree(exact / "train" / name, work / "data" / name, ignore=lambda d, files: sorted(files)[60:])
        default = measure(exact, work, a.cache_dir)
        unknown.SMALL_VALIDATION = 0  # calibrate on the validation photos, however few
        validation = measure(exact, work, a.cache_dir)
    print("| calibration | AUROC | known photos called unknown | unseen photos called unknown |\n|---|---|---|---|")
    for name, r in (("cross-fitted (default)", default), ("the run's validation photos", validation)):
        print(f"| {name} | {r['auroc']:.3f} | {r['known_called_unknown'] * 100:.1f}% of {r['known']} | "
              f"{r['unseen_called_unknown'] * 100:.1f}% of {r['unseen']} |")


if __name__ == "__main__":
    main()
