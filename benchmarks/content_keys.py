"""What recognising a collection costs: listing a folder of N image files and finding each file's content key.

    python benchmarks/content_keys.py --cifar ../shared/data/cifar-10-python.tar.gz --images 60000

Writes the first N images of the archive as PNG files in class folders (a temporary folder), then times
image_folder() three ways, each the median of --repeats: a cold memo (every file hashed), the memo warm (no file
read: size, mtime, ctime and inode match), and with 1% of the files touched (those read and hashed again).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from PIL import Image  # noqa: E402

from cnncodes.data import cifar10, content  # noqa: E402
from cnncodes.data.datasets import image_folder  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", required=True)
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    images, labels, names, _ = cifar10.load(a.cifar, download=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for i in range(a.images):
            path = tmp / "data" / names[labels[i]] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(path, compress_level=1)
            files.append(path)
        time.sleep(content.MEMO_MARGIN_NS / 1e9)  # files written just now would be hashed again (racily clean)
        cold, warm, touched = [], [], []
        for r in range(a.repeats):
            cache = tmp / f"cache{r}"
            cold.append(timed(lambda: image_folder(tmp / "data", cache_dir=cache)))
            warm.append(timed(lambda: image_folder(tmp / "data", cache_dir=cache)))
            for f in files[r::100]:
                os.utime(f)
            time.sleep(content.MEMO_MARGIN_NS / 1e9)
            touched.append(timed(lambda: image_folder(tmp / "data", cache_dir=cache)))  # those touched: hashed again
        size = sum(f.stat().st_size for f in files) / 2**20
    print(f"{a.images:,} PNG files ({size:,.0f} MiB), median of {a.repeats}:")
    print(f"  memo cold (every file read and hashed)   {statistics.median(cold):7.2f} s  {cold}")
    print(f"  memo warm (no file read)                 {statistics.median(warm):7.2f} s  {warm}")
    print(f"  warm, 1% of the files touched (re-read)  {statistics.median(touched):7.2f} s  {touched}")


if __name__ == "__main__":
    main()
