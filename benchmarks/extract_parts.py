"""Where the time of `cnncodes extract` goes, per runtime: decoding and preprocessing alone, the network alone,
both through the engine's path in one process, and the command end to end; the command's time beyond the engine's
is what it spends once (process start, imports, graph loading, writing the codes file).

    python benchmarks/extract_parts.py [--images 2000] [--runtimes torch,onnx-int8] [--repeats 3]
    python benchmarks/extract_parts.py --profile [--runtimes onnx-int8]   # the network's time per operator type
    python benchmarks/extract_parts.py --run-sizes 8,64 [--runtimes onnx-int8]   # how ONNX Runtime is best run

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
    from cnncodes.codes import runtime as process
    from cnncodes.backbones import get_backbone
    from cnncodes.data.datasets import load_dataset
    from cnncodes.codes.extract import Calibration
    from cnncodes.codes.inference import encode, encode_batch, inference_model, prepare
    from cnncodes.codes.onnx_graphs import codes_graph

    if runtime == "torch":  # as the command: the onnx runtimes never import PyTorch
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


def _graph_and_windows(runtime: str, images: int, tmp: Path):
    """The codes graph of `runtime` (built, int8 calibrated, in `tmp`) and the windows of the first `images` images."""
    import numpy as np

    from cnncodes.backbones import get_backbone
    from cnncodes.data.datasets import load_dataset
    from cnncodes.codes.extract import Calibration
    from cnncodes.codes.inference import prepare
    from cnncodes.codes.onnx_graphs import codes_graph

    folder = tmp / "images"
    for f in image_list(images):
        (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / f.parent.name / f.name)
    dataset = load_dataset(str(folder))
    spec = get_backbone(BACKBONE)
    graph = codes_graph(spec, runtime, tmp / "cache", Calibration(dataset, spec))
    return graph, np.stack([prepare(dataset.read, i, spec) for i in range(len(dataset))])


def profile(runtime: str, batch: int, batches: int = 6) -> None:
    """ONNX Runtime's own profile of the codes graph on batches of the same images: share of time per operator type."""
    import collections

    import onnxruntime as ort

    from cnncodes.codes import runtime as process

    with tempfile.TemporaryDirectory() as tmp:
        graph, windows = _graph_and_windows(runtime, batch, Path(tmp))
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
            per_op[_operator_kind(e["args"], windows.shape[1])] += e["dur"]
    total = sum(per_op.values())
    print(f"{runtime}: {total / batches / 1000:.0f} ms per batch of {batch} in operators")
    for op, us in per_op.most_common():
        print(f"  {op:<28} {us / batches / 1000:6.1f} ms {us / total * 100:5.1f}%")


def _operator_kind(args: dict, image_side: int) -> str:
    """A convolution's kind from its shapes (the profile does not list prepacked weights): the stem reads the whole
    image, a depthwise one keeps its channel count (EfficientNet-Lite's pointwise ones never do)."""
    op = args["op_name"]
    if "Conv" not in op or not args.get("output_type_shape"):
        return op
    def channels_and_side(shape: dict) -> tuple[int, int]:
        dims = next(iter(shape.values()))
        if op == "QLinearConv":  # ORT runs the int8 convolutions NHWC
            return dims[-1], dims[1]
        return (dims[1] * dims[4] if len(dims) == 5 else dims[1]), dims[2]  # NCHW, or NCHWc blocks of channels
    (c_in, side), (c_out, _) = channels_and_side(args["input_type_shape"][0]), channels_and_side(args["output_type_shape"][0])
    kind = "stem" if side == image_side else "depthwise" if c_in == c_out else "pointwise"
    return f"{op} {kind}"


def run_sizes(runtime: str, sizes: list[int], images: int = 256, rounds: int = 5) -> dict:
    """The network alone on the same windows, run two ways, in alternating rounds: ONNX Runtime's operator threads
    on batches of 64 (every core on each operator), and Session's one-threaded runs of N images, one per core at
    once. Medians of images/s and of CPU time per image (all threads of this process)."""
    import onnxruntime as ort

    from cnncodes.codes import onnx_graphs
    from cnncodes.codes import runtime as process
    from cnncodes.codes.onnx_graphs import Session

    with tempfile.TemporaryDirectory() as tmp:
        graph, windows = _graph_and_windows(runtime, images, Path(tmp))
        options = ort.SessionOptions()
        options.intra_op_num_threads = process.cpu_count()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        operator_threads = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        name = operator_threads.get_inputs()[0].name
        session = Session(graph)

        def whole_batches():
            for s in range(0, len(windows), 64):
                operator_threads.run(None, {name: windows[s:s + 64]})

        def runs_of(n):
            def run():
                onnx_graphs.RUN_IMAGES = n
                session(windows)
            return run

        ways = {"operator threads, batches of 64": whole_batches} | {f"one-threaded runs of {n}": runs_of(n) for n in sizes}
        speed, cpu = {k: [] for k in ways}, {k: [] for k in ways}
        for r in range(rounds + 1):
            for k, run in ways.items():
                t, c = time.perf_counter(), time.process_time()
                run()
                if r:  # the first round warms up
                    speed[k].append(len(windows) / (time.perf_counter() - t))
                    cpu[k].append((time.process_time() - c) / len(windows) * 1000)
    print(f"{runtime}: the network alone on {len(windows)} images, {process.cpu_count()} cores, medians of {rounds} rounds")
    print("| how it runs | images/s | CPU ms per image |\n|---|---|---|")
    for k in ways:
        print(f"| {k} | {statistics.median(speed[k]):.0f} | {statistics.median(cpu[k]):.2f} |")
    return {k: {"images_per_s": statistics.median(speed[k]), "cpu_ms_per_image": statistics.median(cpu[k])} for k in ways}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--runtimes", default="torch,onnx-int8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--json", default=None)
    p.add_argument("--profile", action="store_true", help="only ONNX Runtime's per-operator profile of each onnx runtime")
    p.add_argument("--run-sizes", default=None, help="only the network alone, as ONNX Runtime's operator threads vs "
                   "one-threaded runs of these numbers of images (e.g. 8,64)")
    args = p.parse_args()
    if args.run_sizes:
        found = {rt: run_sizes(rt, [int(n) for n in args.run_sizes.split(",")])
                 for rt in args.runtimes.split(",") if rt != "torch"}
        if args.json:
            Path(args.json).write_text(json.dumps(found, indent=1))
        return
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
