"""Accuracy per minute of a whole first `cnncodes run`: each candidate from an empty cache, in a fresh process.

    python benchmarks/frontier.py --data ../shared/data/cifar-10-python.tar.gz --json results/frontier.json \
        [--configs lite0-onnx,lite0-160-ft1-onnx] [--plot docs/frontier.png]

A row is what a newcomer's first run costs: wall time of the command (start-up, the codes of all 60,000 images,
the head, the report), each step's time (metrics.json `timings`), the peak resident memory of the process, and
validation / test accuracy. The candidate to pick is the one with the highest validation accuracy within the time
budget (`--budget`, minutes); test accuracy is printed beside it, never used to choose. Rows already in --json are
kept (a long frontier can be measured in several sittings); --plot draws validation accuracy against minutes;
--repeats N runs each configuration N times and keeps the run of the median wall time (each run's wall time, step
times and test accuracy beside it). Each run also records the machine's matrix throughput just before and just after
it (`extract_speed.measure_ceiling`, GFLOP/s of PyTorch's bf16 product, fp32 where the CPU has no bf16): shared
machines slow down for minutes at a time, and a wall time says little without the speed the machine ran at.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from extract_speed import measure_ceiling

L0 = "efficientnet_lite0"
CANDIDATES = {  # name: arguments of `cnncodes run`
    "default": [],  # `cnncodes run` as a newcomer types it (the runtime decided for this machine)
    "lite0-torch": ["--backbone", L0, "--runtime", "torch"],
    "lite0-onnx": ["--backbone", L0, "--runtime", "onnx"],
    "lite0-int8": ["--backbone", L0, "--runtime", "onnx-int8"],
    "lite0-onnx-noreport": ["--backbone", L0, "--runtime", "onnx", "--no-report"],
    "lite0-multi-onnx": ["--backbone", f"{L0}:layers=multi", "--runtime", "onnx"],
    "lite1-onnx": ["--backbone", "efficientnet_lite1", "--runtime", "onnx"],
    "lite2-onnx": ["--backbone", "efficientnet_lite2", "--runtime", "onnx"],
    "lite0-ft1-torch": ["--backbone", L0, "--finetune", "1", "--runtime", "torch"],
    "lite0-ft1-onnx": ["--backbone", L0, "--finetune", "1", "--runtime", "onnx"],
    "lite0-ft2-onnx": ["--backbone", L0, "--finetune", "2", "--runtime", "onnx"],
    "lite0-128-onnx": ["--backbone", f"{L0}:size=128", "--runtime", "onnx"],
    "lite0-160-onnx": ["--backbone", f"{L0}:size=160", "--runtime", "onnx"],
    "lite0-160-ft1-onnx": ["--backbone", f"{L0}:size=160", "--finetune", "1", "--runtime", "onnx"],
    "lite0-128-ft1-onnx": ["--backbone", f"{L0}:size=128", "--finetune", "1", "--runtime", "onnx"],
    "lite0-ft1-int8": ["--backbone", L0, "--finetune", "1", "--runtime", "onnx-int8"],
    "lite0-ft1e6-int8": ["--backbone", L0, "--finetune", "1", "--epochs", "6", "--runtime", "onnx-int8"],
    "lite0-ft1e6-torch": ["--backbone", L0, "--finetune", "1", "--epochs", "6", "--runtime", "torch"],
    "lite0-160-ft1e6-int8": ["--backbone", f"{L0}:size=160", "--finetune", "1", "--epochs", "6", "--runtime",
                             "onnx-int8"],
    "lite0-160-ft1-int8": ["--backbone", f"{L0}:size=160", "--finetune", "1", "--runtime", "onnx-int8"],
    "lite0-160-ft1-torch": ["--backbone", f"{L0}:size=160", "--finetune", "1", "--runtime", "torch"],
}

# The child measures the run and its own peak memory (the CLI re-executes itself in the same process, so the
# child's RUSAGE_CHILDREN covers it).
TIMED = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
print(json.dumps({"rc": rc, "wall_seconds": round(time.perf_counter() - t, 1),
                  "peak_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2)}))
"""


def matrix_gflops() -> int:
    """The machine's speed now: PyTorch's 2048^3 product in bf16 (fp32 without bf16), GFLOP/s (measure_ceiling times
    ONNX Runtime's products too, about 13 s in all)."""
    rates = measure_ceiling()
    return round(rates.get("bf16", rates["fp32"]))


def measure(name: str, data: str, keep: Path | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="frontier-"))
    try:
        before = matrix_gflops()
        cli = [str(Path(sys.executable).with_name("cnncodes")), "run", "--data", data, "--cache-dir",
               str(work / "cache"), "--out", str(work / "run"), *CANDIDATES[name]]
        done = subprocess.run([sys.executable, "-c", TIMED, *cli], stdout=subprocess.PIPE, text=True)
        row = {"name": name, "args": " ".join(CANDIDATES[name])} | json.loads(done.stdout.strip().splitlines()[-1])
        row |= {"gflops_before": before, "gflops_after": matrix_gflops()}
        if row["rc"] == 0:
            metrics = json.loads((work / "run" / "metrics.json").read_text())
            row |= {"validation_accuracy": metrics["validation_accuracy"], "test_accuracy": metrics["accuracy"],
                    "head": metrics["head"], "head_choice": metrics["head_choice"], **metrics["timings"]}
        if keep is not None and (work / "run").exists():
            shutil.copytree(work / "run", keep / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.npz"))
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def machine() -> str:
    import os

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    features = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx512f", "avx2") if f" {f}" in flags]
    return f"{model}, {os.cpu_count()} cores, {'/'.join(features) or 'no AVX'}"


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        minutes = row["wall_seconds"] / 60
        ax.scatter(minutes, 100 * row["validation_accuracy"], color="tab:blue")
        ax.annotate(row["name"], (minutes, 100 * row["validation_accuracy"]), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("minutes of a first `cnncodes run` (empty cache)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(rows[0]["machine"], fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the CIFAR-10 archive")
    ap.add_argument("--configs", default=",".join(CANDIDATES), help="names, comma-separated: " + ", ".join(CANDIDATES))
    ap.add_argument("--json", default="results/frontier.json")
    ap.add_argument("--budget", type=float, default=5.0, help="minutes a first run may take (default 5)")
    ap.add_argument("--keep", help="copy each run folder (without its model) here")
    ap.add_argument("--plot", help="write the validation-accuracy-against-minutes plot here")
    ap.add_argument("--repeats", type=lambda v: max(1, int(v)), default=1, help="runs of each configuration: its "
                    "row is the run of the median wall time, with every run's wall time, step times and test accuracy "
                    "beside it")
    args = ap.parse_args()
    names = [n for n in args.configs.split(",") if n]  # --configs "": only the table and the plot of --json's rows
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        sys.exit(f"unknown configurations {unknown}; known: {', '.join(CANDIDATES)}")
    out = Path(args.json)
    rows = json.loads(out.read_text()) if out.exists() else []
    for name in names:
        print(f"{time.strftime('%H:%M:%S')} {name}: cnncodes run {' '.join(CANDIDATES[name])}", flush=True)
        runs = [measure(name, str(Path(args.data).resolve()),
                        Path(args.keep) / (f"repeat{n}" if args.repeats > 1 else "") if args.keep else None)
                for n in range(args.repeats)]
        failed = [r for r in runs if r["rc"] != 0]  # a failure is the row: no median hides it
        row = failed[0] if failed else sorted(runs, key=lambda r: r["wall_seconds"])[(len(runs) - 1) // 2]
        if len(runs) > 1:
            row |= {"runs_wall_seconds": [r["wall_seconds"] for r in runs],
                    "runs_test_accuracy": [r.get("test_accuracy") for r in runs],
                    "runs_gflops": [[r["gflops_before"], r["gflops_after"]] for r in runs],
                    "runs_step_seconds": [{k: v for k, v in r.items() if k.endswith("_seconds") and k != "wall_seconds"}
                                          for r in runs]}
        row["machine"] = machine()
        rows = [r for r in rows if r["name"] != name] + [row]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)
    print("| configuration | wall | codes | head | report | peak memory | validation | test |")
    print("|---|---|---|---|---|---|---|---|")
    done = sorted((r for r in rows if r["rc"] == 0), key=lambda r: r["wall_seconds"])
    for r in done:
        print(f"| `{r['args'] or 'cnncodes run'}` | {r['wall_seconds'] / 60:.1f} min | {r['codes_seconds']:.0f} s | {r['head_seconds']:.0f} s "
              f"| {r.get('report_seconds', 0):.0f} s | {r['peak_gib']:.2f} GiB | {100 * r['validation_accuracy']:.2f}% "
              f"| {100 * r['test_accuracy']:.2f}% |")
    within = [r for r in done if r["wall_seconds"] <= 60 * args.budget]
    if within:
        best = max(within, key=lambda r: r["validation_accuracy"])
        print(f"highest validation accuracy within {args.budget:g} min: {best['name']} ({best['args']})")
    else:
        print(f"no configuration finished within {args.budget:g} min on {machine()}")
    if args.plot and done:
        plot(done, args.plot)


if __name__ == "__main__":
    main()
