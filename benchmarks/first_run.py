"""A first extraction's speed against another revision of cnncodes, in alternating rounds on the same images.

    python benchmarks/first_run.py --folder ../shared/data/cifar10-exact/train --images 500 --rounds 3 --rev b14b174

Each round extracts the first N images of the folder (copied into a temporary tree) with each revision, from an
empty cache, in a fresh process (the revision's src/ on PYTHONPATH; `git worktree` checks it out). Prints
images/s per round and the median ratio (this tree / the revision).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMED = """
import sys, time
from cnncodes import extract_codes, image_folder
ds = image_folder(sys.argv[1]) if "cache_dir" not in image_folder.__code__.co_varnames else \\
    image_folder(sys.argv[1], cache_dir=sys.argv[2])
t = time.perf_counter()
codes = extract_codes(ds, "efficientnet_lite0", cache_dir=sys.argv[2], progress=False)
print(len(codes.ids) / (time.perf_counter() - t))
"""


def rate(src: Path, data: Path, cache: Path) -> float:
    shutil.rmtree(cache, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", TIMED, str(data), str(cache)], capture_output=True, text=True,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, check=True)
    return float(out.stdout.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", required=True, help="a folder of class folders")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rev", required=True, help="the git revision to compare with")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = sorted(Path(a.folder).rglob("*.png"))[:a.images]
        for f in files:
            target = tmp / "data" / f.parent.name / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(tmp / "rev"), a.rev],
                       check=True, capture_output=True)
        try:
            ratios = []
            for r in range(a.rounds):
                before = rate(tmp / "rev" / "src", tmp / "data", tmp / "cache")
                now = rate(ROOT / "src", tmp / "data", tmp / "cache")
                ratios.append(now / before)
                print(f"round {r + 1}: {a.rev} {before:6.1f} images/s, this tree {now:6.1f} images/s, ratio {now / before:.3f}",
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "rev")], capture_output=True)
    print(f"median ratio (this tree / {a.rev}) over {a.rounds} rounds: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
