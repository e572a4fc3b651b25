"""Peak resident memory of the steps whose data grows, each case in a fresh process (os.wait4's ru_maxrss).

    python benchmarks/memory.py --data ../shared/data/cifar-10-python.tar.gz --work /tmp/cnncodes-memory

Cases (--cases picks some):
  extract-6000 / extract-60000  Lite0 codes of a folder of that many CIFAR-10 PNGs (written from the archive into
                                --work), into an empty cache: the peak must not grow with the number of images
  int8-6000                     the same with --runtime onnx-int8 (the int8 graph calibrated first, on 256 of the
                                images)
  head-100000 / head-1000000    tuned head (C search, refit) on synthetic 1,280-d codes in a store on disk
                                (float32: 0.5 and 5.1 GB), 80/10/10 train/validation/test
  best                          `cnncodes run --preset best` on the official CIFAR-10 (codes from the cache)
--reference adds, after each head case, scikit-learn's full-batch fit at the C the head chose (the accuracy bar).
Each case runs --repeats times (default 3): medians, and the range of the peaks. Writes results/memory.json; prints
a table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CASES = ("extract-6000", "extract-60000", "int8-6000", "head-100000", "head-1000000", "best")
FEATURES, CLASSES = 1280, 10


def write_pngs(archive: str, folder: Path, n: int) -> Path:
    """The first n images of the archive (training images first) as class-folder PNGs; written once."""
    from PIL import Image

    from cnncodes.data import cifar10

    done = folder / ".complete"
    if done.exists():
        return folder
    images, labels, names, _ = cifar10.load(archive)
    for i in range(n):
        path = folder / names[labels[i]] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(path)
    done.touch()
    return folder


def write_synthetic(root: Path, n: int) -> Path:
    """n codes like pooled ReLU activations, appended batch by batch into a store: each of the 10 classes is a
    mixture of 8 clusters, so that (as on CIFAR-10 codes) the search picks a C inside its grid, not at an end."""
    if (root / "labels.npy").exists():
        return root
    store = synthetic_store(root)
    centres = np.random.default_rng(0).normal(0, 0.3, (CLASSES, 8, FEATURES)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, CLASSES, n)
    clusters = np.random.default_rng(2).integers(0, 8, n)
    with store.writer() as append:
        for k, start in enumerate(range(0, n, 2048)):
            r = range(start, min(n, start + 2048))
            noise = np.random.default_rng(100 + k).standard_normal((len(r), FEATURES), dtype=np.float32)
            append([f"synthetic:{i}" for i in r],
                   np.maximum(centres[labels[r.start:r.stop], clusters[r.start:r.stop]] + noise, 0), {})
    np.save(root / "labels.npy", labels)
    return root


def synthetic_store(root: Path):
    from cnncodes.codes.identity import ExtractionIdentity
    from cnncodes.codes.store import CodeStore

    return CodeStore(root / "store", ExtractionIdentity(backbone="synthetic", weights="", preprocess={}, runtime="torch",
                                                      precision="fp32", graph=None, device="cpu", width=FEATURES,
                                                      dtype="float32"))


def synthetic_codes(root: Path, n: int):
    """The n synthetic codes as a CodeMatrix over the store (nothing read)."""
    rows, _, _ = synthetic_store(root).lookup([f"synthetic:{i}" for i in range(n)])
    return synthetic_store(root).matrix(rows)


def case_extract(args, n: int, runtime: str = "auto", what: str = "") -> dict:
    import shutil
    import tempfile

    from cnncodes import extract_codes, image_folder

    folder = Path(args.work) / f"png-{n}"
    cache = Path(tempfile.mkdtemp(dir=args.work, prefix="cache-"))
    try:
        codes = extract_codes(image_folder(folder), "efficientnet_lite0", cache_dir=cache, runtime=runtime,
                              progress=False)
        return {"rows": codes.vectors.shape[0], "what": f"Lite0 codes of {n:,} PNGs (folder){what}"}
    finally:
        shutil.rmtree(cache)


def case_head(args, n: int) -> dict:
    from cnncodes.codes.view import Codes
    from cnncodes.pipeline import predict_codes, train_head

    root = Path(args.work) / f"synthetic-{n}"
    matrix = synthetic_codes(root, n)
    labels = np.load(root / "labels.npy")
    splits = np.array(["train", "validation", "test"])[np.searchsorted([0.8, 0.9], np.linspace(0, 1, n, False),
                                                                       side="right")]
    codes = Codes(matrix, labels, np.arange(n).astype(str), splits, [f"c{k}" for k in range(CLASSES)], "synthetic")
    head = train_head(codes, "tuned")
    proba = predict_codes(head, codes)
    test = float((proba.argmax(1) == codes.part("test")[1]).mean())
    return {"rows": n, "what": f"tuned head, synthetic {n:,} x {FEATURES:,} codes on disk", "best_C": head.best_c_,
            "validation_accuracy": head.validation_accuracy_, "test_accuracy": test}


def case_reference(args, n: int, c: float) -> dict:
    """scikit-learn's full-batch fit at the C the streamed head chose, on all codes in memory: the accuracy bar."""
    from sklearn.linear_model import LogisticRegression

    from cnncodes.heads.base import scaler_stats, standardize

    root = Path(args.work) / f"synthetic-{n}"
    x = np.asarray(synthetic_codes(root, n))
    labels = np.load(root / "labels.npy")
    fit, test = slice(0, int(0.9 * n)), slice(int(0.9 * n), n)  # train + validation, as the head's refit
    mean, scale = scaler_stats(x[fit])
    model = LogisticRegression(C=c, max_iter=1000).fit(standardize(x[fit], mean, scale), labels[fit])
    return {"rows": n, "what": f"scikit-learn full batch at C={c:g}, {n:,} codes in memory",
            "test_accuracy": float(model.score(standardize(x[test], mean, scale), labels[test]))}


def run_case(args, case: str) -> dict:
    """The case in a fresh process: its peak resident memory and wall time."""
    if case == "best":
        out = Path(args.work) / "run-best"
        command = [sys.executable, "-m", "cnncodes", "--quiet", "run", "--data", args.data, "--preset", "best",
                   "--out", str(out)]
    else:
        command = [sys.executable, __file__, "--data", args.data, "--work", args.work, "--child", case]
    t = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{case} failed (status {status}): {output[-2000:]}")
    result = json.loads(output.strip().splitlines()[-1]) if case != "best" else best_result(out)
    return result | {"case": case, "peak_gib": usage.ru_maxrss * 1024 / 2**30, "seconds": seconds}


def repeated(args, case: str) -> dict:
    """The case --repeats times: the first run's other results, the median peak and wall time, and the peaks' range
    (a process's peak varies from run to run with thread timing)."""
    runs = [run_case(args, case) for _ in range(args.repeats)]
    peaks = sorted(r["peak_gib"] for r in runs)
    return runs[0] | {"peak_gib": statistics.median(peaks), "peak_range_gib": [peaks[0], peaks[-1]],
                      "seconds": statistics.median(r["seconds"] for r in runs)}


def best_result(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    return {"rows": sum(metrics["split_sizes"].values()), "what": "cnncodes run --preset best (official CIFAR-10)",
            "validation_accuracy": metrics["validation_accuracy"], "test_accuracy": metrics["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the official CIFAR-10 archive")
    parser.add_argument("--work", default="/tmp/cnncodes-memory", help="PNG folders, synthetic stores, runs")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json", default="results/memory.json")
    parser.add_argument("--reference", action="store_true", help="after each head case, scikit-learn's full-batch "
                        "fit at the same C on all codes in memory (its memory is not the point: its accuracy is)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case (medians and the peaks' range)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.child:
        kind, rest = args.child.split("-", 1)
        n, _, c = rest.partition(":")
        work = {"extract": case_extract, "head": case_head, "reference": case_reference,
                "int8": lambda a, m: case_extract(a, m, "onnx-int8", ", --runtime onnx-int8")}[kind]
        print(json.dumps(work(args, int(n), *([float(c)] if c else []))))
        return
    cases = args.cases.split(",")
    for case in cases:  # inputs first, outside the measured processes
        kind, _, n = case.partition("-")
        if kind in ("extract", "int8"):
            write_pngs(args.data, Path(args.work) / f"png-{n}", int(n))
        elif kind == "head":
            write_synthetic(Path(args.work) / f"synthetic-{n}", int(n))
    rows = []
    for case in cases:
        rows.append(repeated(args, case))
        if args.reference and case.startswith("head-"):  # n and the chosen C travel in the case name
            rows.append(repeated(args, f"reference-{case.split('-')[1]}:{rows[-1]['best_C']}"))
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in ("case", "peak_gib", "seconds", "what")}
        print(f"{r['case']:24s} peak {r['peak_gib']:6.2f} GiB  {r['seconds']:7.0f} s  {extra}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"\nmedians of {args.repeats} runs")
    print("| case | what | peak resident memory (range) | wall time | validation / test accuracy |\n|---|---|---:|---:|---|")
    for r in rows:
        accuracy = " / ".join(f"{r[k] * 100:.2f}%" for k in ("validation_accuracy", "test_accuracy") if r.get(k))
        low, high = r["peak_range_gib"]
        print(f"| {r['case']} | {r['what']} | {r['peak_gib']:.2f} GiB ({low:.2f}-{high:.2f}) | {r['seconds']:.0f} s | "
              f"{accuracy} |")


if __name__ == "__main__":
    main()
