"""Where the time of `cnncodes extract` goes, per runtime: decoding and preprocessing alone, the network alone,
both through the engine's path in one process, and the command end to end; the command's time beyond the engine's
is what it spends once (process start, imports, graph loading, writing the codes file).

    python benchmarks/extract_parts.py [--images 2000] [--runtimes torch,onnx-int8] [--repeats 3]
    python benchmarks/extract_parts.py --profile [--runtimes onnx-int8]   # the network's time per operator type

Same images as benchmarks/extract_speed.py (seeded draw from the cifar10-exact training PNGs). Each part runs in a
fresh process, `--repeats` times after a warm-up; medians. The graph of an ONNX runtime is built (and int8
calibrated) once, before any timing, into a temporary cache.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import image_list  # noqa: E402  (the same images)

BACKBONE = "efficientnet_lite0"


def part(name: str, runtime: str, folder: str, cache: str, batch: int) -> float:
    """Seconds of one part, measured inside this (fresh) process after a warm-up on the first batches."""
    from cnncodes import runtime as process
    from cnncodes.backbones import get_backbone
    from cnncodes.datasets import load_dataset
    from cnncodes.extract import Calibration
    from cnncodes.inference import encode, encode_batch, inference_model, prepare
    from cnncodes.onnx_graphs import codes_graph

    process.configure_threads()
    dataset = load_dataset(folder)
    spec = get_backbone(BACKBONE)
    device, precision = "cpu", process.resolve_precision("auto", "cpu")
    graph = codes_graph(spec, runtime, Path(cache), Calibration(dataset, spec))
    model = inference_model(BACKBONE, device, graph)
    threads = max(2, process.cpu_count())
    rows = range(len(dataset))
    if name == "preprocess":
        from concurrent.futures import ThreadPoolExecutor

        def run(indices):
            with ThreadPoolExecutor(threads) as pool:
                for _ in pool.map(lambda i: prepare(dataset.read, i, spec), indices):
                    pass
    elif name == "network":
        items = [prepare(dataset.read, i, spec) for i in rows[:batch]]

        def run(indices):
            for _ in range(0, len(indices), batch):
                encode_batch(items, model, spec, device, precision)
    else:  # both, through the local engine's path
        def run(indices):
            for _ in encode(dataset.read, indices, spec, model, device=device, precision=precision, batch_size=batch,
                            threads=threads):
                pass
    run(rows[:2 * batch])
    t = time.perf_counter()
    run(rows)
    return time.perf_counter() - t


def profile(runtime: str, batch: int, batches: int = 6) -> None:
    """ONNX Runtime's own profile of the codes graph on batches of the same images: share of time per operator type."""
    import collections
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import onnxruntime as ort

    from cnncodes import runtime as process
    from cnncodes.backbones import get_backbone
    from cnncodes.datasets import load_dataset
    from cnncodes.extract import Calibration
    from cnncodes.inference import prepare
    from cnncodes.onnx_graphs import codes_graph

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        for f in image_list(batch):
            (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, folder / f.parent.name / f.name)
        dataset = load_dataset(str(folder))
        spec = get_backbone(BACKBONE)
        graph = codes_graph(spec, runtime, Path(tmp) / "cache", Calibration(dataset, spec))
        with ThreadPoolExecutor(2) as pool:
            windows = np.stack(list(pool.map(lambda i: prepare(dataset.read, i, spec), range(len(dataset)))))
        options = ort.SessionOptions()
        options.intra_op_num_threads = process.cpu_count()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        for _ in range(batches):
            session.run(None, {session.get_inputs()[0].name: windows})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    print(f"{runtime}: {total / batches / 1000:.0f} ms per batch of {batch} in operators")
    for op, us in per_op.most_common():
        print(f"  {op:<20} {us / total * 100:5.1f}%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--runtimes", default="torch,onnx-int8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--json", default=None)
    p.add_argument("--profile", action="store_true", help="only ONNX Runtime's per-operator profile of each onnx runtime")
    args = p.parse_args()
    if args.profile:
        for rt in args.runtimes.split(","):
            if rt != "torch":
                profile(rt, args.batch)
        return
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "CNNCODES_MALLOC", "GLIBC_TUNABLES")}
    preload = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
    part_env = env | ({"LD_PRELOAD": preload} if Path(preload).exists() else {})  # as the CLI runs itself
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = image_list(args.images)
        for f in files:
            (tmp / "images" / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, tmp / "images" / f.parent.name / f.name)
        for rt in args.runtimes.split(","):
            cache = tmp / f"cache-{rt}"
            row = results[rt] = {}
            for name in ("preprocess", "network", "engine"):
                times = []
                for _ in range(args.repeats):
                    out = subprocess.run([sys.executable, __file__, "--part", name, rt, str(tmp / "images"), str(cache),
                                          str(args.batch)], env=part_env, capture_output=True, text=True, check=True)
                    times.append(float(out.stdout.strip().splitlines()[-1]))
                row[name] = len(files) / statistics.median(times)
            times = []
            for r in range(args.repeats + 1):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "cnncodes", "--quiet", "extract", "--data", str(tmp / "images"),
                                "--runtime", rt, "--cache-dir", str(cache), "--out", str(tmp / "codes")], env=env,
                               check=True, capture_output=True)
                if r:
                    times.append(time.perf_counter() - t)
                shutil.rmtree(cache / "codes")
            row["command"] = len(files) / statistics.median(times)
            row["fixed_seconds"] = statistics.median(times) - len(files) / row["engine"]  # start, imports, files
    print(f"{len(files)} images, batch {args.batch}; images/s (ms per image)")
    print("| runtime | decode + preprocess alone | network alone | both, engine path | `cnncodes extract` | its time beyond the engine |")
    print("|---|---|---|---|---|---|")
    for rt, r in results.items():
        cells = [f"{r[k]:.0f} ({1000 / r[k]:.2f})" for k in ("preprocess", "network", "engine", "command")]
        print(f"| {rt} | " + " | ".join(cells) + f" | {r['fixed_seconds']:.1f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--part":
        print(part(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])))
    else:
        main()
