"""Extract (or find cached) codes for several backbones on one dataset and record wall time per backbone.

    python benchmarks/extract_all.py --data ../shared/data/cifar-10-python.tar.gz --backbones efficientnet_lite0,inception_v3_2015 \
        --times results/extract_times.json

Times are only written for extractions that really ran (not for cache hits).
"""
import argparse
import json
import time
from pathlib import Path

from cnncodes import extract_codes, load_dataset
from cnncodes.files import atomic_write


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2,inception_v3_2015")
    p.add_argument("--flip", action="store_true", help="also extract horizontally flipped codes")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--times", default="results/extract_times.json")
    args = p.parse_args()
    ds = load_dataset(args.data)
    times_path = Path(args.times)
    for name in args.backbones.split(","):
        for flip in ([False, True] if args.flip else [False]):
            t0 = time.perf_counter()
            codes = extract_codes(ds, name, cache_dir=args.cache_dir, flip=flip)
            seconds = time.perf_counter() - t0
            key = f"{ds.name}/{name}{'/flip' if flip else ''}"
            times = json.loads(times_path.read_text()) if times_path.exists() else {}
            if seconds > 30 or key not in times:  # a cache hit takes seconds; keep the real extraction time
                times[key] = {"seconds": round(seconds, 1), "images": len(ds), "images_per_s": round(len(ds) / seconds, 1)}
                atomic_write(times_path, json.dumps(times, indent=1).encode())
            print(f"{key}: {codes.vectors.shape} in {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
