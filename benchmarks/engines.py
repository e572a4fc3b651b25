"""Local engine against the Ray Data engine on the same images, one machine, fresh cache each time.

    python benchmarks/engines.py [--images 2000] [--repeats 2] [--backbone efficientnet_lite0]

Ray's time includes starting a local Ray instance (what `cnncodes extract --engine ray` pays on one machine);
the steady-state rate excludes it. Printed: medians and the ratio local / Ray.
"""
import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-exact"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--backbone", default="efficientnet_lite0")
    args = p.parse_args()

    import ray

    from cnncodes import extract_codes, image_folder

    files = sorted((DATA / "train").glob("*/*.png"))
    pick = np.random.default_rng(0).choice(len(files), args.images, replace=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in pick:
            (tmp / "data" / files[i].parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(files[i], tmp / "data" / files[i].parent.name / files[i].name)
        ds = image_folder(tmp / "data")
        extract_codes(ds.subset(range(64)), args.backbone, cache_dir=tmp / "warm", runtime="torch",
                      progress=False)  # load weights once
        times = {"local": [], "ray": []}
        for r in range(args.repeats):
            for engine in ("local", "ray"):
                t = time.perf_counter()
                codes = extract_codes(ds, args.backbone, cache_dir=tmp / f"{engine}{r}", engine=engine, runtime="torch",
                                      progress=False)  # fresh caches: no ONNX graph export timed
                times[engine].append(time.perf_counter() - t)
                if engine == "ray":
                    ray.shutdown()
        local, via_ray = statistics.median(times["local"]), statistics.median(times["ray"])
    n = len(codes.ids)
    print(f"{n} cifar10-exact PNG images, {args.backbone}, median of {args.repeats}")
    print(f"{'engine':<8} {'seconds':>8} {'images/s':>9}")
    print(f"{'local':<8} {local:>8.1f} {n / local:>9.1f}")
    print(f"{'ray':<8} {via_ray:>8.1f} {n / via_ray:>9.1f}")
    print(f"Ray takes {via_ray / local:.2f}x the local engine's time on one machine (Ray start-up included)")


if __name__ == "__main__":
    main()
